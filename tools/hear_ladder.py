"""The ladder of issue 34: one factor at a time between a plain spiking word classifier on real
voices (``../shared/tools/hear_probe.py``) and the shipped core's recipe, at equal data and budget.

Every rung trains a :class:`~tessera.trainer.learning.pretrain.Recipe` on the ``train`` people
of a hear set (:mod:`tessera.trainer.data.hearset`) for the same number of epochs, and is
scored on the ``choose`` people (what decides), the ``report`` people and FSDD (never used to
decide); one JSON line per rung is appended to OUT.

    python -m tessera.tools.hear_ladder HEARSET.npz OUT.jsonl NAME [factor=value ...]
        [tts=CORPUS.h5,...] [out=RUNDIR] [init=RUNDIR/checkpoint.pt]
    python -m tessera.tools.hear_ladder HEARSET.npz OUT.jsonl model=MODEL.pt   # a trained model
"""

from __future__ import annotations

import dataclasses
import json
import sys

__all__ = ["run"]


def run(hs_path: str, recipe, threads: int = 1, tts: tuple = (), init: str | None = None,
        out: str | None = None) -> dict:
    import torch

    from ..trainer.data.hearset import load_hear_set
    from ..trainer.evaluation.hear import score_features
    from ..trainer.learning.pretrain import embed_all, train_classifier
    torch.set_num_threads(threads)
    hs = load_hear_set(hs_path, tts)
    net, summary = train_classifier(hs, recipe, out, init=init)
    scores = score_features(hs, lambda idx: embed_all(net, hs, idx))
    return dict(recipe=dataclasses.asdict(recipe), tts=list(tts), minutes=summary["minutes"],
                log=summary["log"], scores=scores)


def main(argv: list[str]) -> None:
    hs_path, out, name = argv[:3]
    if name.startswith("model="):
        from ..trainer.data.hearset import load_hear_set
        from ..trainer.evaluation.hear import score_model
        res = dict(model=name[6:], scores=score_model(load_hear_set(hs_path), name[6:]))
    else:
        opts = {a.split("=")[0]: a.split("=", 1)[1] for a in argv[3:]
                if a.split("=")[0] in ("tts", "init", "out")}
        from ..trainer.learning.pretrain import recipe_from_factors
        res = dict(name=name, **run(hs_path, recipe_from_factors([a for a in argv[3:]
                                                                  if a.split("=")[0] not in opts]),
                                    tts=tuple(v for v in opts.get("tts", "").split(",") if v),
                                    init=opts.get("init"), out=opts.get("out")))
        res.update({k: v for k, v in opts.items() if k != "tts"})
    with open(out, "a") as fh:
        fh.write(json.dumps(res) + "\n")
    print(json.dumps(dict(name=name, minutes=res.get("minutes"), **res["scores"])))


if __name__ == "__main__":
    main(sys.argv[1:])
