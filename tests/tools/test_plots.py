"""The PNG plots (tools/plots.py)."""

import numpy as np

from tessera.tools import plots


def _png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_each_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    t, u = np.sort(rng.random(500)), rng.integers(0, 700, 500)
    assert _png(plots.raster_png(tmp_path / "r.png", t, u, 700, title="one"))
    w = rng.normal(size=(64, 64)) * (rng.random((64, 64)) < 0.2)
    assert _png(plots.layout_heatmap_png(tmp_path / "h.png", w, 2, 2, 16))
    assert _png(plots.confusion_png(tmp_path / "c.png", [[2, 1], [0, 3]], ["a", "b"],
                                    ["a", "b"]))
    curve = [dict(shots=k, accuracy=0.5 + 0.1 * k, low=0.4 + 0.1 * k, high=0.6 + 0.1 * k,
                  words=5)
             for k in (1, 2, 3)]
    assert _png(plots.shots_png(tmp_path / "s.png", curve))
    records = [dict(iteration=i, acc=0.2 + i / 100, rate=0.05, task_loss=1.0)
               for i in range(1, 30)]
    records.append(dict(eval="val", iteration=29, accuracy=0.6, ci95=0.03, ways=5, shots=1))
    assert _png(plots.learning_curve_png(tmp_path / "l.png", records))
