"""The demo's figures on a local chip (tessera/demo/figures.py)."""

from tessera.tools.bench import speechlike_signal
from tessera.demo import DemoSet, Utterance
from tessera.demo.figures import local_figures


def test_local_figures_draws_each_figure_it_has_data_for(model4, tmp_path):
    from tessera.runtime.chip import Chip

    shots = {w: Utterance(w, speechlike_signal(0.5, k), "synth") for k, w in enumerate("ab")}
    pool = {w: [Utterance(w, speechlike_signal(0.5, 10 * k + j), "synth") for j in range(4)]
            for k, w in enumerate("ab")}
    ds = DemoSet(shots, tests=[], pool=pool)
    out = {"table": {"confusion": {"matrix": [[3, 1, 0], [0, 4, 0]], "rows": ["a", "b"],
                                   "cols": ["a", "b", "none"]}}}
    pngs = local_figures(ds, Chip.load(model4), str(tmp_path), out, shots_curve=(1, 2),
                         draws=2, seed=0)
    assert {"pipeline", "layout", "confusion", "shots"} <= set(pngs)
    assert "scores" not in pngs                         # no sentence was streamed
    for path in pngs.values():
        with open(path, "rb") as fh:
            assert fh.read(4) == b"\x89PNG"
    assert [row["shots"] for row in out["shots_curve"]] == [1, 2]
    for row in out["shots_curve"]:          # the board's rule: a "none" counts as wrong
        assert 0 <= row["accuracy"] <= row["accuracy_nearest"] <= 1


def test_shots_curve_counts_none_as_wrong(model4):
    """With a threshold no cosine reaches, every answer is "none": accuracy 0 by the board's
    rule, whatever the nearest word would have been."""
    from tessera.demo.figures import _shots_curve
    from tessera.runtime.chip import Chip

    pool = {w: [Utterance(w, speechlike_signal(0.5, 10 * k + j), "synth") for j in range(3)]
            for k, w in enumerate("ab")}
    chip = Chip.load(model4)
    chip.readout.none_threshold = chip.tab.cos_to_q(1.0) + 1
    curve = _shots_curve(chip, DemoSet({}, tests=[], pool=pool), (1,), draws=3, seed=0)
    assert curve[0]["accuracy"] == 0 and curve[0]["accuracy_nearest"] > 0
