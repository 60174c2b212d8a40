"""Bit-exact parity (trainer integer mode vs chip) and few-shot accuracy through the chip.

``parity``: every test utterance streamed through :class:`~tessera.runtime.chip.Chip` in random
chunks, against :class:`~tessera.trainer.learning.intmode.IntCore` on the whole batch: spike rasters,
features, logits of an enrolled readout and one enrollment update must be identical.

``chip_accuracy``: 5-way k-shot episodes (the same sampler and seed as ``tessera eval``) scored
with the chip's own enrollment (words one at a time in a random order, shot by shot, integer,
through the RRAM model) on the chip's integer features, next to the float model on the same binned
inputs and the same episodes; over weight bit widths and drift ages. ``order_differ`` is the
fraction of queries answered differently than after one joint enrollment of the same shots.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from ...runtime.chip import Chip
from ...runtime.errors import InputError
from ...runtime.rram import RRAMConfig
from ..data.chipdata import chip_and_data, frames_of, held_out_indices
from ..data.readers import read_any
from ..learning.episodes import evaluation_tasks
from ..learning.adapt import ci95, evaluate
from ..learning.intmode import IntCore

__all__ = ["parity", "chip_accuracy"]


def parity(model_path: str, data_path: str, limit: int = 0, seed: int = 0,
           progress: bool = False) -> dict:
    chip, data = chip_and_data(model_path, data_path, progress)
    tab = chip.tab
    idx = held_out_indices(data)
    if limit:
        idx = idx[:limit]
    ms = tab.steps * tab.bin_ms
    rng = np.random.default_rng(seed)
    ref = IntCore(tab)
    # enroll a readout on the chip: the first utterance of up to 5 classes, one at a time
    first = {}
    for i in idx:
        first.setdefault(int(data.labels[i]), int(i))
    for c, i in list(first.items())[:5]:
        chip.reset()
        chip.run(frames_of(data, np.array([i]), ms, data.channels)[0])
        phi = chip.features()
        chip.enroll(data.label_names[c])
        col = chip.readout.names.index(data.label_names[c])
        levels, exp = ref.prototype_column(torch.from_numpy(phi[None]))
        if not (np.array_equal(levels.numpy(), chip.readout.arr.levels[:, col])
                and exp == int(chip.readout.exps[col])):
            raise AssertionError("enrolled column differs between the chip and the integer mode")
    w_out = torch.from_numpy(chip.readout.W[:, chip.enrolled()])
    exact = np.zeros(idx.size, bool)
    mismatch = []
    bar = _bar(idx.size, progress)
    for s in range(0, idx.size, 128):
        part = idx[s:s + 128]
        frames = frames_of(data, part, ms, data.channels)
        ras_ref, phi_ref = ref.forward(ref.bins(torch.from_numpy(frames)))
        lq_ref = ref.cosines(phi_ref, w_out)
        for j, f in enumerate(frames):
            chip.reset()
            cuts = np.sort(rng.integers(0, ms + 1, size=int(rng.integers(0, 6))))
            ras = np.vstack([chip.run(c) for c in np.split(f, cuts)])
            phi = chip.features()
            ras = np.vstack([ras, chip.tail])
            lq = chip.scores_q(phi)
            ok = (np.array_equal(ras, ras_ref[j].numpy()) and np.array_equal(phi, phi_ref[j].numpy())
                  and np.array_equal(lq, lq_ref[j].numpy()))
            exact[s + j] = ok
            if not ok and len(mismatch) < 10:
                mismatch.append(int(part[j]))
        bar.update(part.size)
    bar.close()
    return dict(bit_exact_fraction=round(float(exact.mean()), 6), utterances=int(idx.size),
                exact=int(exact.sum()), mismatched_utterances=mismatch, model=model_path,
                data=data_path, enrolled=chip.classes(),
                checked=["spike rasters", "features", "cosine scores", "enrolled columns"])


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, leave=False, unit="utt")


def _episodes_chip(chip: Chip, phis: np.ndarray, sampler, episodes: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy per episode with the device path (words enrolled one at a time, in a random
    order) and the fraction of queries whose answer differs from one joint enrollment."""
    rng = np.random.default_rng(seed)
    acc, differ = np.zeros(episodes), np.zeros(episodes)
    for e in range(episodes):
        ep = sampler.episode(e)
        shots = {}
        for i, y in zip(ep.support, ep.support_y):
            shots.setdefault(f"class{int(y)}", []).append(phis[i])
        preds = []
        for joint in (False, True):
            for c in chip.classes():
                chip.forget(c)
            if joint:
                chip.enroll_many(shots)
            else:
                for label in rng.permutation(sorted(shots)):
                    for phi in rng.permutation(len(shots[label])):     # shot by shot too
                        chip.enroll(str(label), [shots[label][phi]])
            rows = chip.enrolled()
            order = np.array([int(chip.readout.names[r][5:]) for r in rows])
            preds.append(order[np.argmax(chip.scores_q(phis[ep.query], rows), axis=1)])
        acc[e] = float((preds[0] == ep.query_y).mean())
        differ[e] = float((preds[0] != preds[1]).mean())
    return acc, differ


def people_split(split, people: str) -> np.ndarray:
    """The split array with the ``val`` voices (1) in the test's place (2) and the test's in
    theirs, for ``people`` "val"; unchanged for "test"."""
    sp = np.asarray(split)
    return np.where(sp == 1, 2, np.where(sp == 2, 1, sp)) if people == "val" else sp


def chip_accuracy(model, model_path: str, data_path: str, *, shots=(1, 5), episodes: int = 600,
                  weight_bits=(8,), drift=(), write_noise: float = 0.0, seed: int = 1234,
                  progress: bool = False, people: str = "test") -> dict:
    """Few-shot accuracy through the chip vs the float model, on the same episodes; ``people``:
    the corpus's ``test`` voices (default) or its ``val`` voices (for ``tessera corpus hear
    --people``: the choose people, what a recipe may be chosen on)."""
    import dataclasses

    from ..exchange.export import ExportConfig, export_model

    if people not in ("test", "val"):
        raise InputError(f"chip-eval: people must be 'test' or 'val', got {people!r}")
    cfg = model.config
    data = read_any(data_path, level_eq=model.level_eq, progress=progress)
    if people == "val":                          # the validation voices take the test's place
        data = dataclasses.replace(data, split=people_split(data.split, people))
    tasks = evaluation_tasks(data, cfg.data.unseen, cfg.train.seed)   # the same as eval's
    pool, _ = tasks.pool("unseen")
    ms = cfg.data.steps * int(round(1000 * cfg.data.duration / cfg.data.steps))
    frames = frames_of(data, pool, ms, data.channels)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def run(wb, ages=(), compensate=True):
            path = os.path.join(tmp, f"m{wb}.tsr")
            export_model(model, path, ExportConfig(weight_bits=wb))
            chip = Chip.load(path, RRAMConfig(write_noise=write_noise, seed=seed,
                                              drift_compensation=compensate))
            out = []
            for age in (0.0, *ages):
                if age:
                    chip.age(age - chip.in_arr.age_s)
                phis = np.zeros((len(data.labels), chip.tab.features), np.int64)
                for s in range(0, pool.size, 256):
                    phis[pool[s:s + 256]] = chip.run_batch(frames[s:s + 256])
                res = {}
                for k in shots:
                    sampler = tasks.sampler("unseen", cfg.data.ways, k, cfg.data.queries,
                                            seed=seed)
                    a, d = _episodes_chip(chip, phis, sampler, episodes)
                    res[k] = (round(float(a.mean()), 4), round(ci95(a), 4),
                              round(float(d.mean()), 6))
                out.append((age, res))
            return out

        # the float model on the very same binned inputs
        export_model(model, os.path.join(tmp, "probe.tsr"), ExportConfig())
        bins = IntCore(Chip.load(os.path.join(tmp, "probe.tsr")).tab).bins(
            torch.from_numpy(frames)).float()
        feats = torch.zeros(len(data.labels), model.core.cfg.neurons * model.core.cfg.segments)
        with torch.no_grad():
            for s in range(0, pool.size, 256):
                feats[pool[s:s + 256]] = model.core.features(bins[s:s + 256])[0]
        floats = {k: evaluate(model.core, model.lrs, None, tasks, phase="unseen",
                              ways=cfg.data.ways, shots=k, queries=cfg.data.queries,
                              episodes=episodes, inner_steps=1, seed=seed, feats=feats,
                              rule=cfg.meta.rule) for k in shots}
        runs = [(wb, (), True) for wb in weight_bits]
        if drift:                                    # ages: with and without compensation
            runs += [(weight_bits[-1], tuple(drift), c) for c in (True, False)]
        for wb, ages, comp in runs:
            for age, res in run(wb, ages, comp):
                if ages and not age:
                    continue                         # age 0 is already a row
                rows.append(dict(weight_bits=wb, drift_s=age,
                                 drift_compensation=comp if age else None,
                                 **{f"acc_{k}shot": res[k][0] for k in shots},
                                 **{f"ci95_{k}shot": res[k][1] for k in shots},
                                 **{f"order_differ_{k}shot": res[k][2] for k in shots},
                                 **{f"gap_{k}shot": round(floats[k]["accuracy"] - res[k][0], 4)
                                    for k in shots}))
    return dict(float={f"{k}-shot": {"accuracy": floats[k]["accuracy"], "ci95": floats[k]["ci95"]}
                       for k in shots},
                rows=rows, episodes=episodes, ways=cfg.data.ways, split="unseen", people=people,
                write_noise=write_noise, data=data_path,
                model=model_path)
