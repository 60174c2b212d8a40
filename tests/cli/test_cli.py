"""The `tessera` command: JSON output, one-line errors with a non-zero exit, the demo."""

import json

import numpy as np
import pytest
from helpers import assert_clean_error, tessera, wav_bytes



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


def test_corpus_build_json(tmp_path):
    out = tmp_path / "c.h5"
    r = tessera("corpus", "build", "--preset", "small", "--speakers", "3", "--no-digits",
                "--words", "en:lights,music", "--out", out, "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["utterances"] == 6 and s["classes"] == 2 and out.exists()
    assert not (tmp_path / "c.h5.part").exists()


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
        _, err = sim.communicate()
    assert "no flash image yet" in err and "no word taught" in err      # why it knows no word
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
               or any(ord(c) < 32 or ord(c) == 127 for c in text)
               or text.strip().lower() == "none")
        try:
            check_label(text)
            assert not bad
        except ProtocolError as exc:
            assert bad and exc.name == "BAD_FIELD"

    labels()


def test_bench_protocol_runs_where_tqdm_is_not_installed(tmp_path):
    """The device side's `pip install .` has no tqdm (an extra): a bench that shows no progress
    bar must not need it (it once failed with ModuleNotFoundError)."""
    (tmp_path / "tqdm.py").write_text("raise ImportError('tqdm is not installed here')\n")
    r = tessera("bench", "protocol", "--parts", "hostile-images", "--hostile", "2", "--json",
                "--no-progress", env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["hostile_images"]["images"] == 2
