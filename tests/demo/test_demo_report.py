"""The demo end to end and its HTML report (tessera/demo/run.py, tessera/demo/report.py)."""

import base64
import json
from html.parser import HTMLParser

import pytest
from helpers import tessera



class _Page(HTMLParser):
    """The parts of the demo's report a test checks: images, tables (by id), the summary."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.summary = {}, {}, None
        self._table = self._row = self._cell = self._script = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images[a["alt"]] = a["src"]
        elif tag == "table":
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "script" and a.get("id") == "summary":
            self._script = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "script" and self._script is not None:
            self.summary, self._script = json.loads(self._script), None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._script is not None:
            self._script += data


@pytest.mark.slow
def test_demo_teaches_the_board_over_the_port_and_writes_a_report(tmp_path):
    out = tmp_path / "demo"
    r = tessera("demo", "--out", out, "--json", "--no-progress", "--no-realtime")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["port"].startswith("/dev/")                   # a pseudo-terminal, as a board's
    assert s["link"]["bytes_sent"] > s["model_bytes"]      # the model went over the link
    t = s["table"]
    assert len(s["words"]) == 5 and t["asked"] == 20 and t["not_taught_asked"] == 6
    assert sum(map(sum, t["confusion"]["matrix"])) == len(s["results"]) == 26
    assert t["accuracy"] >= 0.35     # chance 0.2; seeded, deterministic (8 of 20 since issue 34:
    #                                  the "none" threshold fitted on people rejects TTS; BENCHMARKS)
    assert s["activity"]["synops_per_s"] > 0 and s["shots_curve"][0]["shots"] == 1
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert set(page.images) == set(s["plots"]) == {"pipeline", "scores", "layout", "shots",
                                                   "confusion"}
    for key, src in page.images.items():                   # every image embedded, no files
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (out / f"{key}.png").read_bytes()
    rows = page.tables["per-word"][1:]
    assert rows == [[w["word"], str(w["asked"]), str(w["right"]), str(w["wrong"]),
                     str(w["none"]), f"{w['accuracy']:.3f}"] for w in t["per_word"]]
    totals = dict(page.tables["totals"][1:])
    assert totals["answered right"] == str(t["right"])
    assert totals["words not taught, answered none"] == str(t["not_taught_rejected"])
    assert totals["bytes to the board (all)"] == str(s["link"]["bytes_sent"])
    assert totals["spikes per second"] == str(s["activity"]["spikes_per_s"])
    assert len(page.tables["results"]) == 27
    assert page.summary["table"] == t and page.summary["results"] == s["results"]
