"""Threshold "person" rules on held-out people, through the chip (issue 36 item 7).

Per episode: one person of a hear/people corpus's split, ``W`` taught words (``S`` shots each,
taught one word at a time through the chip's own enrollment), ``N`` of their recordings of other
words given as untaught; asked: their other utterances of the taught words (answered right and
accepted?) and of words neither taught nor given (accepted?). Each rule's threshold is computed
from what the board knows: the columns' leave-one-out cosines, the untaught recordings' scores,
and the held-out shots (a shot scored before the readout learned it: here leave-one-out among a
word's shots, by the board's own :func:`~tessera.firmware_sim.params.held_out_scores`). The
rules are the board's old one (above every untaught score), the same with
the untaught recordings only, and each capped 0.02 below the lowest held-out shot (the board's
rule since session 5: without a held-out shot, the model's threshold).

    python -m tessera.tools.person_threshold CORPUS.h5 [--split 1] [--tsr F.tsr] [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

__all__ = ["person_episodes", "score_rules", "main"]

CONFIGS = ((10, 1, 0), (10, 1, 3), (10, 2, 0), (10, 2, 3), (5, 1, 3))


def person_episodes(tsr: str, data_path: str, split: int, episodes: int = 6,
                    seed: int = 5) -> dict:
    """The scores the rules need, per episode (see the module docstring)."""
    from ..firmware_sim.params import held_out_scores
    from ..trainer.data.chipdata import chip_and_data
    from ..trainer.evaluation.openset import chip_features

    chip, data = chip_and_data(tsr, data_path)
    idx = np.nonzero(data.split == split)[0]
    phi, sp = chip_features(chip, data, idx)
    lab, spk = data.labels[idx], data.speakers[idx]
    tab = chip.tab
    rng = np.random.default_rng(seed)
    rows = []
    for W, S, N in CONFIGS:
        for s in np.unique(spk):
            mine = spk == s
            words = [c for c in np.unique(lab[mine]) if (mine & (lab == c)).sum() > S]
            if len(words) < W + 2:
                continue
            for _ in range(episodes):
                for c in chip.classes():
                    chip.forget(c)
                taught = rng.choice(words, W, replace=False)
                gen, pos = [], []
                for c in taught:
                    ii = rng.permutation(np.nonzero(mine & (lab == c))[0])
                    shots = list(phi[ii[:S]])
                    pos += held_out_scores(chip, f"w{c}", shots)   # as the board scores them
                    chip.enroll(f"w{c}", shots)
                    gen += [(i, f"w{c}") for i in ii[S:]]
                others = rng.permutation(np.nonzero(mine & ~np.isin(lab, taught))[0])
                neg, imp = others[:N], others[N:]
                act = chip.enrolled()
                names = [chip.readout.names[i] for i in act]
                cc = chip.readout.column_cosines()
                np.fill_diagonal(cc, np.iinfo(np.int64).min)
                g_idx = np.array([i for i, _ in gen])
                gs = chip.scores_q(phi[g_idx], act)
                rows.append(dict(
                    W=W, S=S, N=N, cc=cc.max(1).tolist(), pos=pos,
                    negs=chip.scores_q(phi[neg], act).max(1).tolist() if N else [],
                    g_c1=gs.max(1).tolist(), g_in=sp[g_idx].tolist(),
                    g_right=[names[j] == t for j, (_, t) in zip(gs.argmax(1), gen)],
                    i_c1=chip.scores_q(phi[imp], act).max(1).tolist(), i_in=sp[imp].tolist()))
    return dict(model_threshold=int(tab.none_threshold), cos_frac=int(tab.cos_frac),
                min_inputs=int(tab.min_inputs), split=split, rows=rows)


def score_rules(d: dict, margin: float = 0.02, cap: float = 0.95) -> list[dict]:
    """Taught words answered right and untaught words accepted under each rule, per config."""
    one = 1 << d["cos_frac"]
    tm, mi, m, top = d["model_threshold"], d["min_inputs"], round(margin * one), round(cap * one)

    def clamp(t):
        return int(min(max(tm, t), top))

    def above(r, scores):
        return clamp(max(scores) + m) if scores else tm

    def checked(r, t):
        return max(tm, min(t, min(r["pos"]) - m)) if r["pos"] else tm

    rules = {"the model's": lambda r: tm,
             "above every untaught score (the old board)": lambda r: above(r, r["cc"] + r["negs"]),
             "above the untaught recordings only": lambda r: above(r, r["negs"]),
             "old, below every held-out shot (the board now)":
                 lambda r: checked(r, above(r, r["cc"] + r["negs"])),
             "recordings only, below every held-out shot":
                 lambda r: checked(r, above(r, r["negs"]))}
    out = []
    for cfg in CONFIGS:
        rs = [r for r in d["rows"] if (r["W"], r["S"], r["N"]) == cfg]
        if not rs:
            continue
        for name, rule in rules.items():
            g = i = gn = im = 0
            ts = []
            for r in rs:
                t = rule(r)
                ts.append(t / one)
                gc, gi, gr = (np.array(r[k]) for k in ("g_c1", "g_in", "g_right"))
                ic, ii = np.array(r["i_c1"]), np.array(r["i_in"])
                g += int(((gc >= t) & gr & (gi >= mi)).sum())
                gn += gc.size
                i += int(((ic >= t) & (ii >= mi)).sum())
                im += ic.size
            out.append(dict(words=cfg[0], shots=cfg[1], untaught_given=cfg[2], episodes=len(rs),
                            rule=name, taught_right=round(g / gn, 4),
                            untaught_accepted=round(i / im, 4),
                            threshold_mean=round(float(np.mean(ts)), 3),
                            threshold_max=round(float(np.max(ts)), 3)))
    return out


def main(argv=None) -> int:
    from ..firmware_sim import factory_model

    ap = argparse.ArgumentParser(prog="python -m tessera.tools.person_threshold",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a people corpus (.h5 of tessera corpus hear --people)")
    ap.add_argument("--split", type=int, default=1, help="1: validation (choose) people, "
                                                         "2: test (report) people")
    ap.add_argument("--tsr", default=None, help="the chip's model (default: the factory model)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = score_rules(person_episodes(a.tsr or factory_model(), a.data, a.split))
    if a.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        print(f"{r['words']} words x {r['shots']} shot(s), {r['untaught_given']} untaught given "
              f"({r['episodes']} episodes): {r['rule']:48s} taught right "
              f"{100 * r['taught_right']:5.1f} %, untaught accepted "
              f"{100 * r['untaught_accepted']:5.1f} %, threshold {r['threshold_mean']:.3f} "
              f"(max {r['threshold_max']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
