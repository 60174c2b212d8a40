"""`tessera bench all`: every benchmark in one run, written as BENCHMARKS.md's current tables.

Each part calls the same library function as its own ``tessera bench ...`` / ``tessera eval``
command, and each table row names that command, the date and the machine, so anyone can rerun one
row alone. ``quick`` shrinks every part (a small corpus, fewer episodes, frames and kills) to a few
minutes on a 2-core machine; its figures are noisier and say so.

The tables go between two marker lines of a Markdown file (:func:`write_tables`): the hand-written
history around them stays as it is.
"""

from __future__ import annotations

import os
import tempfile
import time

from ..runtime.errors import InputError

__all__ = ["run_all", "markdown", "write_tables", "BEGIN", "END", "PARTS"]

BEGIN = "<!-- tessera bench all: begin (generated; rerun to update) -->"
END = "<!-- tessera bench all: end -->"
PARTS = ("accuracy", "hear", "peers", "stream", "frontend", "runtime", "protocol")


def _machine() -> str:
    from .bench import machine_info

    m = machine_info()
    return f"{m['cpu']}, {m['cores']} cores"


def run_all(model: str, tsr: str, quick: bool = False, data: str | None = None,
            compare: tuple[str, ...] = (), parts=PARTS, say=print, progress: bool = False,
            fsdd: str | None = None, hear: str | None = None) -> dict:
    """Run the parts; ``model``: a trained model, ``model.tsb`` (accuracy, runtime against
    torch), ``tsr``: the chip file of the protocol part. ``data``: the accuracy corpus
    (default: the small corpus, built here, with ``quick``; else the default-preset corpus,
    built here: several minutes)."""
    from .bench import bench_frontend, bench_runtime, machine_info

    unknown = set(parts) - set(PARTS)
    if unknown:
        raise InputError(f"bench all: unknown part(s) {sorted(unknown)} (one of {PARTS})")
    out: dict = dict(quick=quick, model=model, machine=_machine(), date=machine_info()["date"],
                     parts={})
    if "accuracy" in parts:
        t0 = time.perf_counter()
        say("accuracy: few-shot episodes of the model and the baselines ...")
        with tempfile.TemporaryDirectory(prefix="tessera-bench-all-") as tmp:
            out["parts"]["accuracy"] = _accuracy(model, data, tmp, quick, compare, progress)
        out["parts"]["accuracy"]["minutes"] = round((time.perf_counter() - t0) / 60, 2)
    if "hear" in parts and hear:
        from ..trainer.data.hearset import load_hear_set
        from ..trainer.evaluation.hear import score_model

        say("hear: the model on the hear set's people ...")
        episodes = 100 if quick else 300
        out["parts"]["hear"] = dict(
            result=score_model(load_hear_set(hear), model, episodes), episodes=episodes,
            command=f"tessera bench hear {_rel(model)} --data {_rel(hear)} --episodes {episodes}")
    elif "hear" in parts:
        say("hear: skipped (needs --hear FILE, a hear set from tessera corpus hear)")
    if "peers" in parts and fsdd:
        from ..trainer.evaluation.peers import bench_peers
        from ..trainer.learning.storage import load_model

        say("peers: tessera beside the pretrained speech embedding on real voices ...")
        episodes = 100 if quick else 600
        out["parts"]["peers"] = dict(
            result=bench_peers(load_model(model), fsdd, episodes=episodes,
                               compare=tuple(load_model(c) for c in compare), progress=progress,
                               say=say),
            command=f"tessera bench peers --fsdd {_rel(fsdd)} --model {_rel(model)} --episodes "
                    f"{episodes}" + "".join(f" --compare {_rel(c)}" for c in compare))
    elif "peers" in parts:
        say("peers: skipped (needs --fsdd DIR, a folder of real recordings)")
    if "stream" in parts and fsdd:
        from .stream_bench import stream_bench

        say("stream: words found in a running stream with a ground-truth timeline ...")
        minutes = 1.0 if quick else 5.0
        out["parts"]["stream"] = dict(
            result=stream_bench(fsdd, f"sim://?model={tsr}", minutes=minutes,
                                thresholds=("model", "person"), say=say),
            command=f"tessera bench stream --fsdd {_rel(fsdd)} --model {_rel(tsr)} --minutes "
                    f"{minutes:g} --threshold model person")
    elif "stream" in parts:
        say("stream: skipped (needs --fsdd DIR, a folder of real recordings)")
    if "frontend" in parts:
        say("front-end speed ...")
        reps = 3 if quick else 5
        out["parts"]["frontend"] = dict(result=bench_frontend(repeats=reps),
                                        command=f"tessera bench frontend --repeats {reps}")
    if "runtime" in parts:
        say("chip emulator speed, enrollment, footprint ...")
        reps = 8 if quick else 20
        out["parts"]["runtime"] = dict(result=bench_runtime(model, repeats=reps),
                                       command=f"tessera bench runtime {_rel(model)} "
                                               f"--repeats {reps}")
    if "protocol" in parts:
        say("protocol: link budget, fuzzing, lossy link, kills, garbage flood, pty ...")
        out["parts"]["protocol"] = _protocol(tsr, quick)
    return out


def _rel(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _accuracy(model: str, data: str | None, tmp: str, quick: bool, compare, progress) -> dict:
    from ..trainer.learning.storage import load_model
    from ..trainer.evaluation.evaluate import eval_setup, evaluate_model

    if data is None:
        from ..trainer.data.corpus import PRESETS, CorpusConfig, build_corpus

        preset = "small" if quick else "default"
        extra = dict(repeats=3) if quick else {}      # small x 3: enough for 5-shot episodes
        data = os.path.join(tmp, f"corpus-{preset}.h5")
        build_corpus(data, CorpusConfig(**{**PRESETS[preset], **extra}), progress=progress,
                     preset=preset)
        origin = (f"tessera corpus build --preset {preset}"
                  + (" --repeats 3" if quick else "") + f" --out corpus-{preset}.h5")
        shown = f"corpus-{preset}.h5"
    else:
        origin, shown = "", _rel(data)
    episodes = 100 if quick else 600
    m = load_model(model)
    setup = eval_setup(m, data, progress)
    rows = evaluate_model(m, data, shots=(1, 5), episodes=episodes, baselines=("dtw",),
                          setup=setup, compare=tuple(load_model(c) for c in compare))
    cmd = (f"tessera eval {_rel(model)} --data {shown} --shots 1 5 --episodes {episodes} "
           f"--baselines dtw" + "".join(f" --compare {_rel(c)}" for c in compare))
    return dict(rows=rows, command=cmd, corpus_command=origin, data=shown)


def _protocol(tsr: str, quick: bool) -> dict:
    from . import protocol_bench as pb

    frames, kills, words = (5_000, 10, 5) if quick else (100_000, 100, 10)
    r = dict(link_budget=pb.link_budget(tsr), fuzz=pb.fuzz(tsr, frames=frames),
             lossy_enroll=pb.lossy_enroll(tsr, words=words),
             kill_during_save=pb.kill_during_save(tsr, kills=kills),
             garbage_flood=pb.garbage_flood(), pty_enroll=pb.pty_enroll(tsr))
    return dict(result=r, commands=dict(
        link_budget="tessera bench protocol --parts link",
        fuzz=f"tessera bench protocol --parts fuzz --frames {frames}",
        lossy_enroll=f"tessera bench protocol --parts lossy --words {words}",
        kill_during_save=f"tessera bench protocol --parts kill --kills {kills}",
        garbage_flood="tessera bench protocol --parts flood",
        pty_enroll="tessera bench protocol --parts pty"))


# ---------------------------------------------------------------------- Markdown
def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _md_accuracy(a: dict, when: str, where: str) -> list[str]:
    lines = ["#### Few-shot accuracy, 5-way, unseen words by unseen voices", "",
             f"`{a['command']}` ({when}; {where}):", "",
             _row(["method", "shots", "accuracy (95 % CI)", "episodes"]), _row(["---"] * 4)]
    for x in a["rows"]:
        lines.append(_row([x["method"], x["shots"],
                           f"{100 * x['accuracy']:.1f} ± {100 * x['ci95']:.1f} %",
                           x["episodes"]]))
    if a["corpus_command"]:
        lines += ["", f"The corpus: `{a['corpus_command']}` (built by the bench in "
                      f"{a['minutes']} minutes with the evaluation)."]
    return lines + [""]


def _md_hear(h: dict, when: str, where: str) -> list[str]:
    """The model on real people never trained on (issue 34's measure): within and across."""
    r = h["result"]
    lines = ["#### Real people never heard (5-way; one person enrolls, another asks)", "",
             f"`{h['command']}` ({when}; {where}; {h['episodes']} episodes a cell):", "",
             _row(["people", "across, 1 / 5 shots", "within, 1 / 5 shots"]), _row(["---"] * 3)]
    for key, name in (("choose", "choose (held out, chosen on)"),
                      ("unseen", "choose, unseen words"), ("report", "report (held out)"),
                      ("fsdd", "FSDD (validation)")):
        cell = [f"{r.get(f'{key}_{m}_1', '-')} / {r.get(f'{key}_{m}_5', '-')} %"
                for m in ("across", "within")]
        lines.append(_row([name] + cell))
    return lines + [""]


def _md_peers(pe: dict, when: str, where: str) -> list[str]:
    from ..trainer.evaluation.peers import peers_markdown

    return ["#### Beside the pretrained speech-embedding peer, real voices (5-way)", "",
            f"`{pe['command']}` ({pe['result']['data']}, speakers "
            f"{', '.join(pe['result']['speakers'])}; {when}; {where}):", "",
            peers_markdown(pe["result"]), ""]


def _md_stream(st: dict, when: str, where: str) -> list[str]:
    lines = ["#### Words found in a running stream (continuous detection)", "",
             f"`{st['command']}` ({when}; {where}): found = the word named within "
             f"{st['result']['tolerance_ms']} ms of its start; false detections per minute "
             f"of untaught speech and of noise.", "",
             _row(["speaker", "words taught", "threshold", "found", "false / min untaught",
                   "false / min noise", "wrong or repeated in taught words",
                   "start error, median ms", "end error, median ms"]), _row(["---"] * 9)]
    for x in st["result"]["rows"]:
        lines.append(_row([x["speaker"], x["words"],
                           f"{x['threshold']} ({x['detector']['threshold_in_use']:.3f})",
                           f"{x['found']} / {x['taught_words']} ({100 * x['found_rate']:.1f} %)",
                           x["false_per_min_untaught"], x["false_per_min_noise"],
                           x["false_in_taught"], x["start_error"]["median_ms"],
                           x["end_error"]["median_ms"]]))
    return lines + [""]


def _md_figures(title: str, command: str, rows: list, when: str, where: str) -> list[str]:
    """A (what, figure) table under its one command, date and machine."""
    return [f"#### {title}", "", f"`{command}` ({when}; {where}):", "",
            _row(["what", "figure"]), _row(["---"] * 2)] + [_row([k, v]) for k, v in rows] + [""]


def _md_frontend(f: dict, when: str, where: str) -> list[str]:
    x = f["result"]
    rows = [(f"{x['channels']} channels, one core, real-time factor (median), {x['backend']}",
             f"{x['realtime_factor']}x"),
            (f"streaming in 10 ms chunks, {x['backend']}", f"{x['realtime_factor_stream']}x")]
    rows += [(f"{b} backend: whole / streaming", f"{y['realtime_factor']}x / "
              f"{y['realtime_factor_stream']}x") for b, y in x.get("by_backend", {}).items()
             if b != x.get("backend")]
    return _md_figures("Front-end", f["command"], rows, when, where)


def _backend_rows(x: dict) -> list[tuple[str, str]]:
    """One stream's figures per backend: steady streaming, and cold (one utterance right after
    the torch loop ran)."""
    from .bench import peer_speedups

    rows = []
    for name, b in x.get("by_backend", {}).items():
        rows.append((f"{name}: us per 10 ms network step, one stream (cold)",
                     f"{b['us_per_network_step']} ({b['us_per_network_step_cold']})"))
        if "speedup_vs_torch" in b:
            rows.append((f"{name}: speed-up over the trainer's torch step loop "
                         f"({b['torch_us_per_network_step']} us) (cold)",
                         f"{b['speedup_vs_torch']}x ({b['speedup_vs_torch_cold']}x)"))
    for name, pe in x.get("peers", {}).items():
        rows.append((f"peer on the same bins, {name}: us per network step",
                     f"{pe['us_per_network_step']} ({peer_speedups(pe, x['by_backend'])})"))
    rows += [(f"peer, {name}", f"not run: {why}")
             for name, why in x.get("peers_missing", {}).items()]
    return rows


def _md_runtime(rt: dict, when: str, where: str) -> list[str]:
    x = rt["result"]
    return _md_figures("Chip emulator", rt["command"], [
        *_backend_rows(x),
        ("dense integer floor, us per network step",
         round(x["dense_int_floor_us_per_step"] * x["bin_ms"], 2)),
        (f"batched throughput ({x['batch']} streams), utterances/s",
         x["batch_utterances_per_s"]),
        ("batched, peak memory per utterance, MiB", x.get("batch_peak_mib_per_utterance", "-")),
        ("weight bits of this table's model file", x["weight_bits"]),
        ("with the front-end, real-time factor", f"{x['feed_audio_realtime_factor']}x"),
        ("enroll latency (one shot, one step), ms", x["enroll_ms"]),
        ("model file at 4-bit weights, bytes", x["model_bytes"])], when, where)


def _md_protocol(pr: dict, when: str, where: str) -> list[str]:
    x, cmd = pr["result"], pr["commands"]
    b, fz, le = x["link_budget"], x["fuzz"], x["lossy_enroll"]
    k, g, pt = x["kill_during_save"], x["garbage_flood"], x["pty_enroll"]
    after = g["answer_after_flood_s"]
    rows = [("link_budget", f"audio over {b['baud']} baud",
             f"{b['audio_bytes_per_s']} B/s ({b['audio_headroom']}x headroom)"),
            ("link_budget", "spikes, 700 channels, events",
             f"{b['spikes_700ch_events_bytes_per_s']} B/s "
             f"({b['spikes_700ch_events_headroom']}x headroom)"),
            ("fuzz", f"{fz['frames']} fuzzed frames", f"{fz['crashes']} crashes, "
             f"{fz['hangs']} hangs, {fz['unanswered']} unanswered"),
            ("lossy_enroll", f"{le['words']} enrollments over a lossy link",
             f"{le['enrollments_on_device']} landed, exactly once: {le['exactly_once']}"),
            ("kill_during_save", f"{k['kills']} kills during save",
             f"{k['images_loaded']} images loaded, {k['corrupt']} corrupt"),
            ("garbage_flood", f"{g['megabytes']:g} MB of garbage over a pty",
             "answered " + (f"{1000 * after:.0f} ms after" if after is not None else "never")),
            ("pty_enroll", "enroll round trip over a pty", f"{pt['enroll_round_trip_ms']} ms")]
    parts = sorted({key for key, _, _ in rows})
    return ["#### Protocol", "", f"{when}; {where}; each part's command: "
            + "; ".join(f"{key} `{cmd[key]}`" for key in parts) + ".", "",
            _row(["part", "what", "figure"]), _row(["---"] * 3)] \
        + [_row([key, w, f]) for key, w, f in rows] + [""]


#: the parts of the tables, in their order
_MARKDOWN = (("accuracy", _md_accuracy), ("hear", _md_hear), ("peers", _md_peers), ("stream", _md_stream),
             ("frontend", _md_frontend), ("runtime", _md_runtime), ("protocol", _md_protocol))


def markdown(r: dict) -> str:
    """The results as Markdown tables, each under the one command that reruns it, its date and
    machine."""
    when, where = r["date"], r["machine"]
    q = " (`--quick`: smaller runs, noisier figures)" if r["quick"] else ""
    lines = [f"### Current figures: `tessera bench all{' --quick' if r['quick'] else ''}`{q}",
             "", f"Machine: {where}. Date: {when}. Each table's command reruns it alone.", ""]
    for name, md in _MARKDOWN:
        if name in r["parts"]:
            lines += md(r["parts"][name], when, where)
    return "\n".join(lines)


def write_tables(path: str, text: str) -> str:
    """Put ``text`` between the :data:`BEGIN` and :data:`END` lines of ``path`` (appended with
    them if absent; the rest of the file is kept). Written to a temporary file and renamed."""
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
        a, b = old.index(BEGIN), old.index(END) + len(END)
        new = old[:a] + block + old[b:]
    elif BEGIN in old or END in old:
        raise InputError("only one of the bench markers is in the file: fix it by hand",
                         source=path)
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block + "\n"
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)
    return path
