"""The demo's HTML report: the summary's tables and the figures, in one self-contained page."""

from __future__ import annotations

import base64
import html
import json
import os

__all__ = ["write_report"]


# ---------------------------------------------------------------------- the report
def _img(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def _table(head: list[str], rows: list[list], tid: str) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table id="{tid}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def write_report(folder: str, s: dict, default=None) -> str:
    """One self-contained HTML page (images embedded; opens with no server): ``report.html``;
    ``default``: ``json.dumps``'s, for what the summary holds that JSON does not (numpy)."""
    t = s["table"]
    per_word = _table(["word", "asked", "right", "wrong word", "none", "accuracy"],
                      [[r["word"], r["asked"], r["right"], r["wrong"], r["none"], r["accuracy"]]
                       for r in t["per_word"]], "per-word")
    act = s["activity"]
    totals = [["enrolled words asked", t["asked"]], ["answered right", t["right"]],
              ["accuracy", t["accuracy"]],
              ["accuracy, the shot's voice", t["accuracy_same_voice"]],
              ["accuracy, other voices", "n/a (no recording by another voice)"
               if t["accuracy_other_voices"] is None else t["accuracy_other_voices"]],
              ["words not taught, asked", t["not_taught_asked"]],
              ["words not taught, answered none", t["not_taught_rejected"]],
              ["answer latency after the last sample, median ms", t["latency_ms"]["median"]],
              ["answer latency, max ms", t["latency_ms"]["max"]],
              ["bytes to the board (all)", s["link"]["bytes_sent"]],
              ["bytes from the board (all)", s["link"]["bytes_received"]],
              ["synaptic operations per second", act["synops_per_s"]],
              ["spikes per second", act["spikes_per_s"]]]
    results = _table(["said", "voice", "answer", "confidence", "right", "latency ms"],
                     [[r["word"] + ("" if r["enrolled"] else " (not taught)"), r["voice"],
                       r["answer"], r["confidence"], "yes" if r["correct"] else "no",
                       r["latency_ms"]] for r in s["results"]], "results")
    figs = [("pipeline", "From audio to spikes: the front-end and the recurrent core"),
            ("scores", "A streamed sentence: the readout's scores and the detections"),
            ("layout", "The learned layout, by tile, with hop distances"),
            ("shots", "Accuracy against shots"),
            ("confusion", "Confusion of the board's answers")]
    body = [f"<h1>tessera demo</h1><p>{html.escape(s['description'])}.</p>",
            f"<p>Model {html.escape(os.path.basename(s['model']))} ({s['model_bytes']} bytes), "
            f"loaded over the protocol into the simulated board (firmware "
            f"{html.escape(str(s.get('firmware')))}) on a pseudo-terminal; every answer below "
            f"came back through the port. Figures marked <i>local chip</i> were computed on the "
            f"host's chip emulator with the same model file and shots.</p>",
            "<h2>Totals</h2>", _table(["", "value"], totals, "totals"),
            "<h2>Per word</h2>", per_word]
    for key, title in figs:
        if key in s["plots"]:
            body.append(f"<h2>{html.escape(title)}</h2><img alt=\"{key}\" "
                        f"src=\"{_img(s['plots'][key])}\">")
    body += ["<h2>Every answer</h2>", results,
             '<script type="application/json" id="summary">'
             + json.dumps({k: v for k, v in s.items() if k != "plots"}, default=default)
             .replace("</", "<\\/") + "</script>"]
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>tessera demo</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
            "img{max-width:100%}</style></head><body>" + "\n".join(body) + "</body></html>")
    path = os.path.join(folder, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
