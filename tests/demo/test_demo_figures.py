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
