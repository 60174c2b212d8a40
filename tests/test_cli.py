"""The `tessera` command: JSON output, one-line errors with a non-zero exit, the demo."""

import base64
import json
import wave
from html.parser import HTMLParser

import numpy as np
import pytest
from helpers import tessera, wav_bytes

from tessera.runtime.errors import InputError


def assert_clean_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_corpus_info_json(small_corpus):
    r = tessera("corpus", "info", small_corpus, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["classes"] == 20 and info["utterances"] == 320 and info["channels"] == 700
    assert set(info["splits"]) == {"train", "val", "test"}
    assert sum(s["utterances"] for s in info["splits"].values()) == 320
    human = tessera("corpus", "info", small_corpus)
    assert "320 utterances" in human.stdout and "test" in human.stdout


@pytest.mark.parametrize("content,needle", [
    (None, "no such file"),
    (b"garbage, not hdf5", "not a readable HDF5 file"),
])
def test_corpus_info_bad_h5(tmp_path, content, needle):
    p = tmp_path / "bad.h5"
    if content is not None:
        p.write_bytes(content)
    assert_clean_error(tessera("corpus", "info", p), "bad.h5", needle)


def test_corpus_info_non_shd_h5(tmp_path):
    import h5py

    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as h5:
        h5["data"] = np.arange(3)
    assert_clean_error(tessera("corpus", "info", p), "other.h5", "not in the SHD layout")


@pytest.mark.parametrize("name,data,needle", [
    ("0_a_0.wav", wav_bytes(b""), "0 samples"),
    ("0_a_1.wav", wav_bytes(np.array([np.nan] * 4, "<f4").tobytes(), tag=3, bits=32), "NaN"),
    ("0_a_2.wav", wav_bytes(np.zeros(16, "<i2").tobytes(), channels=2), "2 channels"),
])
def test_bad_wavs_in_a_folder(tmp_path, name, data, needle):
    (tmp_path / name).write_bytes(data)
    r = tessera("corpus", "info", tmp_path, "--json")
    assert_clean_error(r, name, needle)
    assert r.stdout == ""


def test_unknown_preset():
    assert_clean_error(tessera("corpus", "build", "--preset", "huge"), "--preset",
                       "invalid choice: 'huge'")


def test_bench_frontend_json():
    r = tessera("bench", "frontend", "--seconds", "1", "--repeats", "1", "--channels", "64",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["channels"] == 64 and out["realtime_factor"] > 0 and "us_per_step" in out


def test_corpus_build_json(tmp_path):
    out = tmp_path / "c.h5"
    r = tessera("corpus", "build", "--preset", "small", "--speakers", "3", "--no-digits",
                "--words", "en:lights,music", "--out", out, "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["utterances"] == 6 and s["classes"] == 2 and out.exists()
    assert not (tmp_path / "c.h5.part").exists()


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
    assert t["accuracy"] > 0.4                             # chance 0.2; seeded, deterministic
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


def test_demo_word_folders_and_microphone(tmp_path):
    from tessera.tools.demo import OTHER, folder_set, mic_set

    def wav(path, seconds=0.3):
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.random.default_rng(0).normal(0, 3000, int(16000 * seconds)))
                          .astype("<i2").tobytes())

    for word in ("lamp", "fan"):
        for k in range(3):
            wav(tmp_path / "w" / word / f"{k}.wav")
    wav(tmp_path / "w" / "_other" / "x.wav")
    ds = folder_set(str(tmp_path / "w"))
    assert sorted(ds.shots) == ["fan", "lamp"] and ds.shots["fan"].source.endswith("0.wav")
    assert len(ds.tests) == 5 and sum(u.word == OTHER for u in ds.tests) == 1
    (tmp_path / "one" / "lamp").mkdir(parents=True)
    wav(tmp_path / "one" / "lamp" / "0.wav")
    wav(tmp_path / "one" / "fan" / "0.wav")
    with pytest.raises(InputError, match="no held-out utterances"):
        folder_set(str(tmp_path / "one"))
    with pytest.raises(InputError, match="no word folders"):
        folder_set(str(tmp_path / "one" / "lamp"))
    asked = []
    ds = mic_set(["yes", "no"], repeats=2, prompt=asked.append,
                 record=lambda: np.zeros(800, np.int16))
    assert sorted(ds.shots) == ["no", "yes"] and len(ds.tests) == 6 and len(asked) == 8
    assert_clean_error(tessera("demo", "--words", tmp_path / "none"), "sub-folder")
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        assert_clean_error(tessera("demo", "--mic", "--out", tmp_path / "m"), "mic extra")


@pytest.mark.parametrize("args", [[], ["corpus"], ["corpus", "build"], ["corpus", "info"],
                                  ["bench", "frontend"], ["train"], ["eval"], ["demo"],
                                  ["export"], ["parity"], ["chip-eval"], ["bench", "runtime"],
                                  ["bench", "protocol"], ["sim"], ["device"], ["device", "enroll"],
                                  ["protocol-test"]])
def test_help_works_everywhere(args):
    r = tessera(*args, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: tessera"), r.stderr


def test_repeated_list_options_accumulate():
    """`--compare A --compare B` scores both models (the last one alone used to win silently)."""
    from tessera.cli import build_parser

    a = build_parser().parse_args(["eval", "m.pt", "--compare", "a.pt", "--compare", "b.pt", "c.pt",
                                   "--baselines", "dtw", "--baselines", "dtw-envelope"])
    assert a.compare == ["a.pt", "b.pt", "c.pt"]
    assert a.baselines == ["dtw", "dtw-envelope"]
    assert build_parser().parse_args(["eval", "m.pt"]).compare == []


def _all_parsers():
    import argparse

    from tessera.cli import build_parser

    todo = [build_parser()]
    while todo:
        p = todo.pop()
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += list(a.choices.values())


def test_every_option_of_every_command_explains_itself():
    """One convention for all commands: every argument has help; every option with a value shows
    its default; no doubled %% reaches the reader; long commands take --no-progress."""
    import argparse

    parsers = list(_all_parsers())
    assert len(parsers) > 25
    for p in parsers:
        text = p.format_help()
        assert "%%" not in text, p.prog
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction,
                              argparse._SubParsersAction)):
                continue
            assert a.help, f"{p.prog} {a.option_strings or a.dest}: no help text"
            if a.option_strings and a.default not in (None, False, [], argparse.SUPPRESS):
                shown = " ".join(map(str, a.default)) if isinstance(a.default, list) \
                    else str(a.default)
                line = p._get_formatter()._get_help_string(a)
                assert "default" in line, f"{p.prog} {a.option_strings}: default {shown} not shown"
    long = {"tessera corpus build", "tessera corpus info", "tessera train", "tessera eval", "tessera parity",
            "tessera chip-eval", "tessera diagnose", "tessera calibrate", "tessera demo"}
    for p in parsers:
        if p.prog in long:
            assert any("--no-progress" in a.option_strings for a in p._actions), p.prog


def test_unknown_option_names_its_subcommand():
    r = tessera("eval", "m.pt", "--bogus")
    assert_clean_error(r, "tessera eval: unrecognized arguments: --bogus", "tessera eval --help")


def test_train_on_missing_data_leaves_no_run_folder(tmp_path):
    pytest.importorskip("torch")
    r = tessera("train", "--data", tmp_path / "nope.h5", "--out", tmp_path / "run", "--no-progress")
    assert_clean_error(r, "no such corpus", "nope.h5")
    assert not (tmp_path / "run").exists()


def test_sim_and_device_json_are_plain_answers(tmp_path):
    """`sim --json` announces its port as one JSON object; `device ... --json` answers without
    the protocol's envelope (v, t, id); `device stats` reads as text, not a Python dict."""
    import subprocess
    import sys

    sim = subprocess.Popen([sys.executable, "-m", "tessera", "sim", "--pty", "--json",
                            "--flash", ""], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        first = json.loads(sim.stdout.readline())
        assert first["port"].startswith("/dev/") and first["firmware"].startswith("tessera-sim")
        info = tessera("device", "info", "--port", first["port"], "--json")
        assert info.returncode == 0, info.stderr
        answer = json.loads(info.stdout)
        assert "firmware" in answer and not {"v", "t", "id"} & set(answer)
        stats = tessera("device", "stats", "--port", first["port"])
        assert stats.returncode == 0 and stats.stdout.startswith("device: ")
        assert "{" not in stats.stdout and "requests" in stats.stdout
    finally:
        sim.kill()
        sim.communicate()


def test_bench_lauscher_compares_and_names_a_missing_output(tmp_path):
    from helpers import tone

    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes(tone(500, 0.5).tobytes()))
    r = tessera("bench", "lauscher", wav, "--json")
    assert_clean_error(r, "a.npz", "no readable lauscher output beside a.wav")
    np.savez(tmp_path / "a.npz", np.array([[0.01, 0.02, 0.30], [5, 600, 5]]))
    r = tessera("bench", "lauscher", wav, "--json", "--png", tmp_path / "c.png")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["files"][0]
    assert row["lauscher"]["spikes"] == 3 and row["tessera"]["spikes"] > 10
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_all_writes_its_tables_between_markers(tmp_path):
    from tessera.tools.bench_all import BEGIN, END, markdown, run_all, write_tables

    r = run_all("unused.pt", "unused.tsr", quick=True, parts=("frontend",), say=lambda _: None)
    text = markdown(r)
    row = next(line for line in text.splitlines() if line.startswith("| 700 channels"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{r['parts']['frontend']['result']['realtime_factor']}x"
    assert cells[2] == "`tessera bench frontend --repeats 3`" and cells[3] == r["date"]
    md = tmp_path / "B.md"
    md.write_text("# history\n\nkept\n")
    write_tables(str(md), text)
    write_tables(str(md), "second run")                    # replaces, keeps the rest
    body = md.read_text()
    assert body.startswith("# history\n\nkept\n") and body.count(BEGIN) == body.count(END) == 1
    assert "second run" in body and row not in body
    md.write_text(f"# history\n{BEGIN}\nno end marker\n")
    with pytest.raises(InputError, match="only one of the bench markers"):
        write_tables(str(md), text)
    assert md.read_text() == f"# history\n{BEGIN}\nno end marker\n"     # untouched
    with pytest.raises(InputError, match="unknown part"):
        run_all("m.pt", "m.tsr", parts=("speed",))


def test_rough_edges_of_the_device_walk(tmp_path):
    """Issue 23, item 7: a second simulator on the same flash image and a busy --listen
    address are clean errors; device info says how many words the model holds; labels must be
    visible; classes lists one label per line."""
    import socket
    import subprocess
    import sys

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tessera.protocol.messages import MAX_LABEL, ProtocolError, check_label

    flash = tmp_path / "f.img"
    sim = subprocess.Popen([sys.executable, "-m", "tessera", "sim", "--pty", "--json",
                            "--flash", str(flash)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        port = json.loads(sim.stdout.readline())["port"]
        assert_clean_error(tessera("sim", "--pty", "--flash", flash),
                           "in use by another simulator", "--flash")
        info = tessera("device", "info", "--port", port)
        assert info.returncode == 0 and "room for 32 words, 0 enrolled" in info.stdout, info.stdout
        from tessera.runtime.audio import write_wav
        wav = tmp_path / "w.wav"
        write_wav(wav, np.zeros(8000, np.int16), 16000)
        blank = tessera("device", "enroll", "--port", port, "--label", "   ", wav)
        assert_clean_error(blank, "empty or only spaces")
        listed = tessera("device", "classes", "--port", port)
        assert listed.returncode == 0 and listed.stdout.strip() == "(none enrolled)"
    finally:
        sim.kill()
        sim.communicate()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        r = tessera("sim", "--listen", f"socket://127.0.0.1:{busy.getsockname()[1]}",
                    "--flash", "")
        assert_clean_error(r, "cannot listen on 127.0.0.1", "another port")
    finally:
        busy.close()

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=80))
    def labels(text):
        bad = (not text.strip() or len(text) > MAX_LABEL
               or any(ord(c) < 32 or ord(c) == 127 for c in text))
        try:
            check_label(text)
            assert not bad
        except ProtocolError as exc:
            assert bad and exc.name == "BAD_FIELD"

    labels()
