"""`tessera pretrain`: the core trained as a word classifier on real voices (issue 34's first stage).

The ladder (BENCHMARKS.md, issue 34) found that a recurrent LIF core trained for minutes as a
plain classifier over every word of the real-voice training people hears new people as well as
the meta-learned recipe or better, and that each of the chip's own choices (its input, readout,
layout) costs at most a few points. This stage trains exactly the chip's core on a hear set
(:mod:`tessera.trainer.data.hearset`: the same 10 ms bins of the same cochlea channels the
chip reads), and writes a standard model bundle (``model.tsb``) that ``tessera export``, ``eval``, ``calibrate``
and ``train --init`` (the meta-learning stage) read.

The network of a :class:`Recipe` (its factors are the ladder's)::

    x     = counts (the chip's) | log1p(counts) | LayerNorm(log1p(counts))   (per 10 ms bin)
    z, r  = the core's spikes and traces (:func:`~tessera.trainer.learning.model.lif_spikes`)
    phi   = means of r (traces) or z (counts) over `segments` parts of the window (the chip's:
            t * segments // window) or of each utterance's own length (up to its last input
            bin: model.input_lengths; the chip's segment_mode "own")
    loss  = cross-entropy of phi W_cls + b_cls over every training word (objective "cls"; with
            ``margin`` an additive-margin cosine classifier), or the device rule's episodes (a
            word's shot by one person, its queries by others, scaled cosines: "proto"), or both
            ("anil": the shipped recipe's mix); + ``teacher`` x (1 - cos(phi W_t, the peer's
            embedding)) (:mod:`~tessera.trainer.learning.objectives`, with the training-only
            input augmentations ``mask`` and ``tilt``)

Only the chip's choices (counts, LIF) make a model the chip can run: :func:`save_model`
refuses the others.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...runtime.errors import InputError
from .model import CoreConfig, init_params, input_lengths, lif_spikes, own_segments
from .objectives import augment, episode_loss, margin_logits, teacher_loss

__all__ = ["Recipe", "recipe_from_factors", "Net", "pad_batch", "train_classifier", "save_model",
           "embed_all"]


@dataclass(frozen=True)
class Recipe:
    model: str = "lif"            # "lif" (the core) or "gru" (GRU(128), the non-spiking peer)
    input: str = "counts"         # "counts" (the chip's), "log1p", "ln" (log1p, LayerNorm per bin)
    segments: int = 8
    seg_mode: str = "own"         # "own" (equal parts of each utterance, up to its last input
                                  # bin) or "window" (equal parts of the window: issue 34's
                                  # session-1 ladder, with window 100)
    window: int = 150             # bins read per utterance (the chip's core.steps)
    readout: str = "traces"       # "traces" (the chip's filtered spikes) or "counts" (spikes)
    objective: str = "cls"        # "cls", "proto" or "anil" (see the module docstring)
    layout: bool = True           # the tiles' layout loss and the firing-rate regulariser
    max_hops: int = 27            # recurrent routes between tiles at most this many hops apart
                                  # (1: a tile, its neighbours; 27: every pair of a 4 x 4 grid)
    rram: bool = False            # 4-bit weights with write noise, straight-through
    rows: int = 4
    cols: int = 4
    tile: int = 16
    epochs: int = 6
    lr: float = 2e-3
    batch: int = 64
    seed: int = 0
    unseen: bool = False          # leave hear.UNSEEN_WORDS out of training (to choose on them)
    real: bool = True             # train on the real people (False: only the TTS voices given)
    time_limit_s: float = 0.0     # stop (and save) after this many seconds, 0: none
    mask: int = 0                 # SpecAugment: time and channel masks per utterance (training)
    tilt: float = 0.0             # a random spectral slope and level per utterance (training)
    margin: float = 0.0           # "cls" as an additive-margin cosine classifier (AM-softmax)
    teacher: float = 0.0          # weight of the peer's embedding as a second target
    sched: str = "const"          # the learning rate: "const" or "cos" (cosine decay to 0)
    dropout: float = 0.0          # dropout of the readout features in training
    wd: float = 0.0               # decoupled weight decay (AdamW) of every parameter
    beta: float = 10.0            # the surrogate's slope: dH/dv = 1 / (beta |v - theta| + 1)^2
    layout_w: float = 0.001       # with ``layout``: the layout loss's weight
    rate_w: float = 50.0          # with ``layout``: the firing-rate penalty's weight

    def __post_init__(self) -> None:
        for name, allowed in (("model", ("lif", "gru")), ("input", ("counts", "log1p", "ln")),
                              ("seg_mode", ("window", "own")),
                              ("readout", ("traces", "counts")),
                              ("objective", ("cls", "proto", "anil")),
                              ("sched", ("const", "cos"))):
            if getattr(self, name) not in allowed:
                raise InputError(f"recipe: {name} must be one of {', '.join(allowed)}, got "
                                 f"{getattr(self, name)!r}")
        if min(self.segments, self.window, self.epochs, self.batch, self.rows, self.cols,
               self.tile, self.max_hops + 1) < 1 or self.segments > self.window:
            raise InputError("recipe: segments, window, epochs, batch and the grid must be >= 1 "
                             "(segments <= window)")
        if self.mask < 0 or self.tilt < 0 or self.teacher < 0 or not 0 <= self.margin < 1:
            raise InputError("recipe: mask, tilt and teacher must be >= 0 and margin in [0, 1), "
                             f"got {self.mask}, {self.tilt}, {self.teacher}, {self.margin}")
        if not 0 <= self.dropout < 1 or min(self.wd, self.layout_w, self.rate_w) < 0 or \
                not self.beta > 0:
            raise InputError("recipe: dropout must be in [0, 1), wd, layout_w and rate_w >= 0 "
                             f"and beta > 0, got {self.dropout}, {self.wd}, {self.layout_w}, "
                             f"{self.rate_w}, {self.beta}")

    @property
    def chip_ready(self) -> bool:
        """The chip runs this network: its input, LIF neurons (segments of its window or of each
        utterance's own length, the model file's ``segment_mode``)."""
        return self.model == "lif" and self.input == "counts"

    def core_config(self, inputs: int) -> CoreConfig:
        return CoreConfig(inputs=inputs, rows=self.rows, cols=self.cols, tile=self.tile,
                          tau_learn=True, tau_spread=8.0, segments=self.segments,
                          segment_mode=self.seg_mode if self.model == "lif" else "window",
                          max_hops=self.max_hops)


def recipe_from_factors(items: list[str]) -> Recipe:
    """``factor=value`` words (``tessera pretrain --set``, the ladder's command lines) into a
    :class:`Recipe`; an unknown factor is named."""
    types = {f.name: str(f.type) for f in dataclasses.fields(Recipe)}
    kw = {}
    for item in items:
        k, _, v = item.partition("=")
        if k not in types:
            raise InputError(f"unknown recipe factor {k!r} (one of {', '.join(types)})")
        t = types[k]
        try:
            kw[k] = (v.lower() in ("1", "true")) if "bool" in t else int(v) if "int" in t else \
                float(v) if "float" in t else v
        except ValueError:
            raise InputError(f"recipe factor {k}: {v!r} is not a number") from None
    return Recipe(**kw)


def pad_batch(xs: list, window: int, full: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Utterances (steps, inputs) cut to ``window`` bins, zero-padded to the longest (``full``:
    to the whole window, as the chip runs it): (B, T, inputs) float32 and the lengths (B,)."""
    lens = [min(len(a), window) for a in xs]
    T = window if full else max(max(lens), 1)
    X = np.zeros((len(xs), T, xs[0].shape[1]), np.float32)
    for i, a in enumerate(xs):
        X[i, :lens[i]] = a[:lens[i]]
    return torch.from_numpy(X), torch.tensor(lens)


class Net:
    """A recipe's network: input transform, core (or GRU), readout features, classifier head."""

    def __init__(self, r: Recipe, inputs: int, classes: int):
        self.r = r
        g = torch.Generator().manual_seed(r.seed)
        self.p: dict = {}
        if r.input == "ln":
            self.p["ln_g"] = torch.ones(inputs)
            self.p["ln_b"] = torch.zeros(inputs)
        self.cfg = r.core_config(inputs)
        if r.model == "gru":
            torch.manual_seed(r.seed)
            self.gru = torch.nn.GRU(inputs, 128, batch_first=True)
            width = 128
        else:
            q = init_params(self.cfg, r.seed)
            self.p.update({k: q[k] for k in ("w_in", "w_rec", "b", "a_mem", "a_out")})
            self.mask = torch.from_numpy(self.cfg.rec_mask()).float()
            width = self.cfg.neurons
        self.width = width * r.segments
        self.p["w_cls"] = torch.randn(self.width, classes, generator=g) * 0.01
        self.p["b_cls"] = torch.zeros(classes)
        self.p["scale"] = torch.tensor(10.0)
        if r.teacher:
            self.p["w_t"] = torch.randn(self.width, 96, generator=g) / math.sqrt(self.width)
        for v in self.p.values():
            v.requires_grad_(True)
        self.params = list(self.p.values()) + (list(self.gru.parameters())
                                               if r.model == "gru" else [])
        self.noise = torch.Generator().manual_seed(r.seed + 1)
        self._cost = None

    def state(self) -> dict:
        out = {k: v.detach().clone() for k, v in self.p.items()}
        if self.r.model == "gru":
            out.update({"gru." + k: v.detach().clone() for k, v in self.gru.state_dict().items()})
        return out

    def load_state(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state.items():
                if k.startswith("gru."):
                    self.gru.state_dict()[k[4:]].copy_(v)
                else:
                    self.p[k].copy_(v)

    def scale_inputs(self, X: torch.Tensor) -> None:
        """W_in scaled so the input current has unit standard deviation (as the trainer does)."""
        if self.r.model != "lif":
            return
        x = self.transform(X)
        with torch.no_grad():
            self.p["w_in"].mul_(1.0 / math.sqrt(max(float((x ** 2).mean()), 1e-6)))

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        if self.r.input == "counts":
            return X
        x = torch.log1p(X)
        if self.r.input == "ln":
            x = F.layer_norm(x, x.shape[-1:], self.p["ln_g"], self.p["ln_b"])
        return x

    def embed(self, X: torch.Tensor, lens: torch.Tensor, train: bool = False):
        """The readout features (B, segments * width) and the spikes (None for the GRU)."""
        r = self.r
        seg_lens = input_lengths(X, r.window) if r.seg_mode == "own" \
            else torch.full_like(lens, r.window)
        if train and (r.mask or r.tilt):
            X = augment(X, seg_lens, r.mask, r.tilt, self.noise)
        x = self.transform(X)
        if r.seg_mode == "window" and x.shape[1] < r.window:
            x = F.pad(x, (0, 0, 0, r.window - x.shape[1]))
        if r.model == "gru":
            h, _ = self.gru(x)
            E = own_segments(h, seg_lens, r.segments)
            return (F.dropout(E, r.dropout) if train and r.dropout else E), None
        w_in, w_rec = self.p["w_in"], self.p["w_rec"] * self.mask
        if r.rram and train:
            from .rram import RRAMTrainConfig, device_weight
            rc = RRAMTrainConfig(enabled=True, weight_bits=4)
            w_in = device_weight(w_in, rc, self.noise)
            w_rec = device_weight(w_rec, rc, self.noise)
        alpha = torch.sigmoid(self.p["a_mem"])
        kappa = torch.sigmoid(self.p["a_out"]) if r.readout == "traces" else 0.0
        z, tr = lif_spikes(x @ w_in + self.p["b"], w_rec, alpha, kappa, 1.0, r.beta)
        E = own_segments(tr if r.readout == "traces" else z, seg_lens, r.segments)
        return (F.dropout(E, r.dropout) if train and r.dropout else E), z

    def regularisers(self, z: torch.Tensor) -> torch.Tensor:
        """The layout loss (lambda ``layout_w``, default 0.001; beta 8) and the rate penalty
        (``rate_w`` x (rate - 0.05)^2, default 50)."""
        from ...runtime.mosaic import layout_cost
        if self._cost is None:
            self._cost = torch.from_numpy(layout_cost(self.cfg.layout.neuron_hops(), 8.0)
                                          ).float() * self.mask
        w = self.p["w_rec"] * self.mask
        return self.r.layout_w * (self._cost * w ** 2).mean() + \
            self.r.rate_w * (z.mean() - 0.05) ** 2


def _checkpoint(path: str, net: Net, opt, epoch: int, rng, log: list, recipe: Recipe,
                classes: list) -> None:
    tmp = path + ".tmp"
    torch.save(dict(format="tessera-pretrain/1", recipe=json.dumps(dataclasses.asdict(recipe)),
                    epoch=epoch, state=net.state(), opt=opt.state_dict(),
                    rng=json.dumps(rng.bit_generator.state), log=json.dumps(log),
                    classes=json.dumps(classes)), tmp)
    os.replace(tmp, path)


def _same_run(recipe: dict) -> dict:
    """What a resumed run must share with its checkpoint: all but its length."""
    return {k: v for k, v in recipe.items() if k not in ("epochs", "time_limit_s")}


def _batch_loss(net: Net, hs, rows: np.ndarray, y: np.ndarray, spk: np.ndarray,
                rng: np.random.Generator, T: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch's loss under the recipe's objective (and regularisers), with the classifier's
    outputs where it has them; ``T``: the teacher's embeddings of the batch."""
    recipe = net.r
    X, lens = pad_batch([hs.x[i] for i in rows], recipe.window)
    E, z = net.embed(X, lens, train=True)
    yt = torch.from_numpy(y)
    out_ = None
    if recipe.objective == "cls" and recipe.margin:
        loss = F.cross_entropy(margin_logits(E, net.p["w_cls"], yt, recipe.margin), yt)
        out_ = margin_logits(E, net.p["w_cls"], yt, 0.0)     # accuracy: the plain cosines
    elif recipe.objective == "cls":
        out_ = E @ net.p["w_cls"] + net.p["b_cls"]
        loss = F.cross_entropy(out_, yt)
    else:
        loss = episode_loss(E, y, spk, net.p["scale"], rng)
        if recipe.objective == "anil":
            out_ = net.p["scale"].detach() * (F.normalize(E, dim=1, eps=1e-8) @
                                              F.normalize(net.p["w_cls"], dim=0, eps=1e-8))
            loss = loss + 0.5 * F.cross_entropy(out_, yt)
    if T is not None:
        loss = loss + recipe.teacher * teacher_loss(E, net.p["w_t"], T)
    if recipe.layout and z is not None:
        loss = loss + net.regularisers(z)
    return loss, out_


def _resume(ckpt: str, net: Net, opt, rng: np.random.Generator) -> tuple[list, int]:
    """Continue from ``ckpt`` (the same recipe but for its length): the network, the optimizer
    and the random state restored; returns the log so far and the epochs done."""
    st = torch.load(ckpt, map_location="cpu", weights_only=True)
    if st.get("format") != "tessera-pretrain/1" or \
            _same_run(dataclasses.asdict(Recipe(**json.loads(st["recipe"])))) != \
            _same_run(dataclasses.asdict(net.r)):
        raise InputError("pretrain --resume: the checkpoint is of another recipe (only "
                         "epochs and time_limit_s may change)", source=ckpt)
    net.load_state(st["state"])
    opt.load_state_dict(st["opt"])
    rng.bit_generator.state = json.loads(st["rng"])
    return json.loads(st["log"]), int(st["epoch"])


def _load_init(net: Net, init: str) -> None:
    """Start from the network of another pretrain run's checkpoint (its shapes must fit)."""
    st = torch.load(init, map_location="cpu", weights_only=True)
    if st.get("format") != "tessera-pretrain/1":
        raise InputError("pretrain: --init needs a pretrain checkpoint.pt", source=init)
    mine = net.state()
    bad = [k for k, v in st["state"].items() if k not in mine or mine[k].shape != v.shape]
    if bad:
        raise InputError(f"pretrain: --init does not fit this recipe ({', '.join(bad)})",
                         source=init)
    net.load_state(st["state"])


def train_classifier(hs, recipe: Recipe, out: str | None = None, *, resume: bool = False,
                     progress: bool = False, init: str | None = None) -> tuple[Net, dict]:
    """Train ``recipe`` on the ``train`` people of the hear set ``hs``; with ``out`` a
    checkpoint after every epoch (``resume`` continues from it); ``init``: start from the
    network of another run's checkpoint (a second stage, e.g. episodes after the classifier).
    Returns the network and a summary (classes, epochs, minutes, per-epoch log)."""
    from tqdm import tqdm

    torch.manual_seed(recipe.seed)
    tr = hs.where(split="train")
    if recipe.unseen:
        tr = tr[~hs.unseen()[tr]]
    if not recipe.real:
        tr = tr[hs.corpus[tr] == "tts"]
    if tr.size == 0:
        raise InputError("pretrain: the hear set has no training people")
    keys = np.array([f"{c}:{w}" for c, w in zip(hs.corpus[tr], hs.word[tr])])
    classes, y_all = np.unique(keys, return_inverse=True)
    net = Net(recipe, hs.x[0].shape[1], len(classes))
    net.scale_inputs(pad_batch([hs.x[i] for i in tr[:200]], recipe.window)[0])
    if init:
        _load_init(net, init)
    opt = torch.optim.AdamW(net.params, recipe.lr, weight_decay=recipe.wd)
    steps = (len(tr) + recipe.batch - 1) // recipe.batch
    rng = np.random.default_rng(recipe.seed)
    spk = hs.speaker[tr]
    if recipe.teacher:
        from .objectives import teacher_targets
        T_all = torch.from_numpy(teacher_targets(hs, tr, progress=progress))
    log: list = []
    first = 0
    ckpt = os.path.join(out, "checkpoint.pt") if out else None
    if out:
        os.makedirs(out, exist_ok=True)
    if resume and ckpt and os.path.exists(ckpt):
        log, first = _resume(ckpt, net, opt, rng)
    t0 = time.time() - (log[-1]["seconds"] if log else 0)
    bar = tqdm(total=recipe.epochs * steps, initial=first * steps, unit="batch",
               desc="pretrain", disable=not progress, leave=False)
    stopped = False
    for ep in range(first, recipe.epochs):
        order = rng.permutation(len(tr))
        right = tot = 0
        for b0 in range(0, len(order), recipe.batch):
            j = order[b0:b0 + recipe.batch]
            loss, out_ = _batch_loss(net, hs, tr[j], y_all[j], spk[j], rng,
                                     T_all[j] if recipe.teacher else None)
            opt.zero_grad()
            loss.backward()
            if recipe.sched == "cos":
                done = (ep * steps + b0 // recipe.batch) / (recipe.epochs * steps)
                for group in opt.param_groups:
                    group["lr"] = recipe.lr * 0.5 * (1.0 + math.cos(math.pi * done))
            opt.step()
            if out_ is not None:
                right += int((out_.argmax(1) == torch.from_numpy(y_all[j])).sum())
                tot += len(j)
            bar.update(1)
        log.append(dict(epoch=ep + 1, train_acc=round(right / max(tot, 1), 4),
                        loss=round(float(loss.detach()), 4), seconds=round(time.time() - t0, 1)))
        if ckpt:
            _checkpoint(ckpt, net, opt, ep + 1, rng, log, recipe, classes.tolist())
        if recipe.time_limit_s and time.time() - t0 > recipe.time_limit_s:
            stopped = ep + 1 < recipe.epochs
            break
    bar.close()
    return net, dict(classes=len(classes), train_utterances=int(tr.size),
                     epochs=log[-1]["epoch"] if log else 0, stopped_early=stopped,
                     minutes=round((time.time() - t0) / 60, 2), log=log)


def embed_all(net: Net, hs, idx: np.ndarray) -> np.ndarray:
    """The readout features of utterances ``idx`` (no gradients), (len(idx), width)."""
    E = np.zeros((len(idx), net.width), np.float32)
    with torch.no_grad():
        for b0 in range(0, len(idx), 200):
            X, lens = pad_batch([hs.x[i] for i in idx[b0:b0 + 200]], net.r.window)
            E[b0:b0 + 200] = net.embed(X, lens)[0].numpy()
    return E


def save_model(net: Net, path: str, summary: dict) -> None:
    """The network as a standard model bundle (``model.tsb``: the device rule
    ANIL-prototype, the readout scale as its inner learning rate), which ``tessera export``
    turns into the chip's file. Only a chip-ready recipe (:attr:`Recipe.chip_ready`) saves."""
    from .config import Config, DataConfig, config_to_dict
    from .meta import MetaConfig
    from .storage import save_bundle

    r = net.r
    if not r.chip_ready:
        raise InputError("pretrain: only a chip-ready recipe (model lif, input counts) can be "
                         "saved as a model")
    cfg = net.cfg
    if r.readout == "counts":                 # the chip's trace with trace_mult 0 is the spike
        a_out = torch.full_like(net.p["a_out"], -30.0)
    else:
        a_out = net.p["a_out"].detach()
    params = {"w_in": net.p["w_in"].detach().clone(), "w_rec": (net.p["w_rec"] * net.mask).detach(),
              "b": net.p["b"].detach().clone(), "a_mem": net.p["a_mem"].detach().clone(),
              "a_out": a_out.clone(), "w_out": torch.zeros(cfg.neurons * cfg.segments, 5),
              "b_out": torch.zeros(5)}
    config = Config(data=DataConfig(corpus="", steps=r.window, duration=r.window / 100.0,
                                    channel_subsets=3),
                    core=cfg, meta=MetaConfig(algorithm="anil", rule="prototype"))
    scale = float(net.p["scale"].detach())
    state = dict(config=config_to_dict(config),
                 core=dataclasses.asdict(cfg), iteration=int(summary.get("epochs", 0)),
                 params=params, masks={"w_in": torch.ones(cfg.inputs, cfg.neurons),
                                       "w_rec": net.mask.clone()},
                 log_lr={"w_out": torch.tensor(math.log(max(scale, 1e-3))),
                         "b_out": torch.tensor(math.log(max(scale, 1e-3)))},
                 extra=dict(pretrain=dict(recipe=dataclasses.asdict(r),
                                          **{k: v for k, v in summary.items()
                                             if k not in ("log", "recipe", "model")})))
    save_bundle(path, state)
