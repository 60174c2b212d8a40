"""Meta-training of the spiking core (the ANIL device rule by default).

``MetaTrainer`` owns the core, the meta-learned inner learning rates and the Adam state, the
meta-batches, the regularisers and the data-parallel step; one ``step()`` is one meta-batch of
tasks. What an algorithm does with a meta-batch is :meth:`MetaTrainer.update`, one class per
algorithm behind that one interface (:mod:`.algorithms`: ANIL, MAML, FOMAML, Reptile and the
transfer baseline). Scoring episodes with the core frozen is :mod:`.adapt`; the voice and
teacher losses are :mod:`.losses`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ...runtime.errors import InputError
from ...runtime.mosaic import layout_cost
from ..data.dense import DenseSet
from .episodes import FewShotTasks
from .losses import relational_loss, supcon_loss
from .meta import MetaConfig
from .model import Core, CoreConfig
from .rram import RRAMTrainConfig, device_weight, quantize_update, stuck_map, threshold_update

__all__ = ["RegConfig", "Batch", "MetaTrainer", "shard"]


@dataclass(frozen=True)
class RegConfig:
    layout_lambda: float = 0.001    # lambda of the layout loss mean(S * W_rec^2)
    layout_beta: float = 8.0
    rate_lambda: float = 50.0       # firing-rate regulariser (mean rate - target)^2
    rate_target: float = 0.05       # spikes per neuron per step
    clip_std: float = 2.5           # clip W_rec to +-clip_std * std of its non-zero entries
    prune_below: float = 5e-4       # prune |W_rec| below this after prune_after steps
    prune_after: int = 200
    time_shift: int = 5             # augmentation: random roll of up to +-N steps


@dataclass
class Batch:
    x: torch.Tensor
    tasks: list = field(default_factory=list)   # (support slice, query slice, y_s, y_q)
    labels: np.ndarray | None = None            # every utterance's corpus class
    speakers: np.ndarray | None = None          # every utterance's voice
    teacher: torch.Tensor | None = None         # (n, segments, 96) teacher embeddings (NaN: none)


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """The tasks ``rank``, ``rank + world``, ... of a meta-batch, with only their utterances."""
    xs, tasks, rows, offset = [], [], [], 0
    for s, q, ys, yq in batch.tasks[rank::world]:
        idx = torch.cat([torch.arange(s.start, s.stop), torch.arange(q.start, q.stop)])
        xs.append(batch.x[idx])
        rows.append(idx.numpy())
        ns = s.stop - s.start
        tasks.append((slice(offset, offset + ns), slice(offset + ns, offset + idx.numel()), ys, yq))
        offset += idx.numel()
    rows = np.concatenate(rows)
    return Batch(torch.cat(xs), tasks,
                 None if batch.labels is None else batch.labels[rows],
                 None if batch.speakers is None else batch.speakers[rows],
                 None if batch.teacher is None else batch.teacher[torch.from_numpy(rows)])


class MetaTrainer:
    """The shared part of every meta-learning algorithm; a subclass (:mod:`.algorithms`) says
    what one meta-batch does (:meth:`update`) and its class attributes what it needs."""

    #: the inner learning rates are meta-learned (when ``meta.learn_inner_lr``)
    learns_inner_lr = True
    #: a linear classifier over every seen word (the transfer baseline's pretraining)
    word_classifier = False
    #: a meta-batch's tasks are shared out over the processes (else its utterances are)
    splits_tasks = True

    def __init__(self, core_cfg: CoreConfig, meta: MetaConfig, reg: RegConfig, data: DenseSet,
                 tasks: FewShotTasks, seed: int = 0, rram: RRAMTrainConfig | None = None):
        torch.manual_seed(seed)
        self.cfg, self.meta, self.reg, self.data, self.tasks = core_cfg, meta, reg, data, tasks
        self.rram = rram or RRAMTrainConfig()
        self.core = Core(core_cfg, seed)
        self.noise = torch.Generator().manual_seed(seed + 1)
        self.rank, self.world = 0, 1              # data-parallel processes (see :meth:`step`)
        self.stuck = {k: stuck_map(self.core.params[k].shape, self.rram.stuck_fraction, self.noise)
                      for k in ("w_in", "w_rec")} if self.rram.stuck_fraction else {}
        self.last_rate = 0.0
        self._scale_inputs()
        init_lr = {"w_out": meta.inner_lr, "b_out": meta.inner_lr}
        if meta.open_ways:                 # the learned "none" cosine, kept as a log like the lrs
            init_lr["none_cos"] = 0.7
        for k in ("w_in", "w_rec", "b"):
            init_lr[k] = meta.inner_lr_core
        learn_lr = meta.learn_inner_lr and self.learns_inner_lr
        self.log_lr = {k: torch.tensor(math.log(v), requires_grad=learn_lr)
                       for k, v in init_lr.items()}
        params = list(self.core.params.values())
        if learn_lr:
            params += list(self.log_lr.values())
        self.head: dict[str, torch.Tensor] = {}
        if self.word_classifier or meta.global_weight:       # a classifier over every
            self.train_pool, seen = tasks.pool("train")           # seen class
            self.class_index = np.full(int(data.labels.max()) + 1, -1, np.int64)
            self.class_index[seen] = np.arange(seen.size)
            width = core_cfg.neurons * core_cfg.segments
            if self.word_classifier:
                self.head = {"w_cls": torch.zeros(width, seen.size, requires_grad=True),
                             "b_cls": torch.zeros(seen.size, requires_grad=True)}
            else:                                    # cosine: random unit columns
                g = torch.Generator().manual_seed(seed + 2)
                self.head = {"w_cls": torch.randn(width, seen.size, generator=g).requires_grad_()}
            params += list(self.head.values())
        width = core_cfg.neurons * core_cfg.segments
        g = torch.Generator().manual_seed(seed + 3)
        if meta.teacher_weight and meta.teacher_mode == "frames":   # features -> teacher frames
            self.head["w_teach"] = (torch.randn(width, core_cfg.segments * 96, generator=g)
                                    / math.sqrt(width)).requires_grad_()
            params.append(self.head["w_teach"])
        if meta.voice_weight:                        # the voice adversary's classifier
            self.head["w_voice"] = torch.zeros(width, len(data.speaker_names), requires_grad=True)
            self.head["b_voice"] = torch.zeros(len(data.speaker_names), requires_grad=True)
            params += [self.head["w_voice"], self.head["b_voice"]]
        self.teacher_mean = None
        if meta.teacher_weight and data.teacher is not None:   # the teacher's common component
            t = data.teacher.astype(np.float32)
            ok = np.isfinite(t).all(axis=(1, 2))
            self.teacher_mean = torch.from_numpy(t[ok].mean(0)) if ok.any() else None
        self.opt = torch.optim.Adam(params, lr=meta.outer_lr)
        if core_cfg.kind == "lif" and not core_cfg.dense:
            self._cost = torch.from_numpy(layout_cost(core_cfg.layout.neuron_hops(),
                                                      reg.layout_beta)).float()
        else:                                        # the dense and GRU baselines: no layout
            self._cost = torch.zeros_like(self.core.masks["w_rec"])
        self.refresh_cost()
        self.rng = np.random.default_rng(seed)
        self.iteration = 0

    def refresh_cost(self) -> None:
        self.cost = self._cost * self.core.masks["w_rec"]

    def device_params(self) -> dict:
        """The parameters as the RRAM arrays hold them (straight-through), or as they are."""
        p = self.core.params
        if not self.rram.enabled:
            return p
        q = dict(p)
        for k in ("w_in", "w_rec"):
            q[k] = device_weight(p[k] * self.core.masks[k], self.rram, self.noise, self.stuck.get(k))
        return q

    def update_transform(self):
        r = self.rram
        if not (r.update_bits or r.update_threshold):
            return None

        def transform(name: str, delta: torch.Tensor) -> torch.Tensor:
            delta = threshold_update(delta, r.update_threshold)
            return quantize_update(delta, r.update_bits, True, self.noise)
        return transform

    def _scale_inputs(self) -> None:
        """Scale W_in so the input current has unit standard deviation on this data."""
        sample = self.data.x[: min(200, len(self.data)), 0].astype(np.float32)
        m2 = float((sample ** 2).mean())
        with torch.no_grad():
            p = self.core.params["w_in"]
            p.mul_(1.0 / math.sqrt(max(m2, 1e-6)))

    def lrs(self) -> dict:
        return {k: v.exp() for k, v in self.log_lr.items()}

    def _draw(self, idx: np.ndarray) -> np.ndarray:
        """Inputs of utterances ``idx``: a random channel subset each, randomly time-shifted."""
        sub = self.rng.integers(self.data.x.shape[1], size=idx.size)
        x = self.data.x[idx, sub].astype(np.float32)
        if self.reg.time_shift:
            shifts = self.rng.integers(-self.reg.time_shift, self.reg.time_shift + 1, idx.size)
            x = np.stack([np.roll(a, s, axis=0) for a, s in zip(x, shifts)])
        return x

    def make_batch(self, sampler, count: int) -> Batch:
        xs, tasks, offset, rows = [], [], 0, []
        for _ in range(count):
            ep = sampler.episode(int(self.rng.integers(2**31)))
            idx = np.concatenate([ep.support, ep.query])
            xs.append(self._draw(idx))
            rows.append(idx)
            ns = ep.support.size
            tasks.append((slice(offset, offset + ns), slice(offset + ns, offset + idx.size),
                          torch.from_numpy(ep.support_y), torch.from_numpy(ep.query_y)))
            offset += idx.size
        rows = np.concatenate(rows)
        teacher = None
        if self.data.teacher is not None and self.meta.teacher_weight:
            teacher = torch.from_numpy(self.data.teacher[rows].astype(np.float32))
        return Batch(torch.from_numpy(np.concatenate(xs)), tasks, self.data.labels[rows],
                     self.data.speakers[rows], teacher)

    def _regularisers(self, rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.core.params["w_rec"] * self.core.masks["w_rec"]
        layout = (self.cost * w ** 2).mean()
        mean = rate.mean()
        if self.world > 1:       # the penalty of the whole meta-batch's rate, not of this share:
            import torch.distributed as dist   # its value, and a gradient that sums to the
                                               # whole batch's once the gradients are averaged
            whole = mean.detach().clone()
            dist.all_reduce(whole)
            whole /= self.world
            return layout, ((whole - self.reg.rate_target) ** 2
                            + 2 * (whole - self.reg.rate_target) * (mean - mean.detach()))
        rate_pen = (mean - self.reg.rate_target) ** 2
        return layout, rate_pen

    def update(self, batch) -> dict:
        """One meta-batch's update of the core (``batch()`` draws this process's share of it);
        returns what it measured (``task_loss``, ``acc``, ``layout``, ``rate``)."""
        raise NotImplementedError(f"{type(self).__name__} names no update")

    def descend(self, total: torch.Tensor) -> None:
        """One optimizer step down ``total``, its gradients averaged over the processes."""
        self.opt.zero_grad()
        total.backward()
        self._all_reduce_grads()
        self.opt.step()

    def outer_total(self, task_loss: torch.Tensor, rate: torch.Tensor, batch: Batch | None,
                    phi: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The outer loss: the tasks' loss plus the layout and rate regularisers, and where the
        core's features ``phi`` of the whole batch are at hand the cosine word head and the
        losses across voices (:meth:`_voice_losses`); with what it measured."""
        layout, rate_pen = self._regularisers(rate)
        total = task_loss + self.reg.layout_lambda * layout + self.reg.rate_lambda * rate_pen
        info = {}
        meta, lrs = self.meta, self.lrs()
        if phi is not None and meta.global_weight and batch is not None \
                and batch.labels is not None:
            y = torch.from_numpy(self.class_index[batch.labels])
            logits = lrs["w_out"].detach() * (F.normalize(phi, dim=1, eps=1e-8)
                                              @ F.normalize(self.head["w_cls"], dim=0, eps=1e-8))
            total = total + meta.global_weight * F.cross_entropy(logits, y)
        if phi is not None and batch is not None:
            for name, (weight, value) in self._voice_losses(phi, batch).items():
                total = total + weight * value
                info[name] = round(float(value.detach()), 4)
        self.last_rate = float(rate.detach().mean())
        return total, dict(task_loss=float(task_loss.detach()), layout=float(layout.detach()),
                           rate=self.last_rate, **info)

    def _voice_losses(self, phi: torch.Tensor, batch: Batch) -> dict:
        """The losses across voices, each as (weight, value): the teacher's distillation, the
        supervised contrastive loss and the voice adversary (see :class:`MetaConfig`)."""
        meta, out = self.meta, {}
        if meta.teacher_weight and batch.teacher is not None:
            ok = torch.isfinite(batch.teacher).all(2).all(1)
            if int(ok.sum()) >= 4:
                out["teacher_loss"] = (meta.teacher_weight,
                                       self._teacher_loss(phi[ok], batch.teacher[ok]))
        if meta.supcon_weight and batch.labels is not None:
            out["supcon_loss"] = (meta.supcon_weight, supcon_loss(
                phi, batch.labels, batch.speakers, meta.supcon_temp, meta.hard_negative))
        if meta.voice_weight and batch.speakers is not None:
            reversed_phi = phi.detach() - (phi - phi.detach())   # value phi, gradient -1
            z = F.normalize(reversed_phi, dim=1, eps=1e-8)
            logits = z @ self.head["w_voice"] * 10.0 + self.head["b_voice"]
            out["voice_loss"] = (meta.voice_weight,
                                 F.cross_entropy(logits, torch.from_numpy(batch.speakers)))
        return out

    def _teacher_loss(self, phi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.teacher_mean is not None:
            t = t - self.teacher_mean
        if self.meta.teacher_mode == "frames":
            pred = (F.normalize(phi, dim=1, eps=1e-8) @ self.head["w_teach"]).view(t.shape)
            return (1 - F.cosine_similarity(pred, t, dim=2, eps=1e-8)).mean()
        if self.meta.teacher_mode == "relational-mean":
            target = t.mean(1)
        else:
            target = F.normalize(t, dim=2, eps=1e-8).flatten(1)
        return relational_loss(phi, target)

    def step(self, sampler) -> dict:
        """One meta-update. Across processes (``world`` > 1, torch.distributed initialised):
        every process draws the same meta-batch (same seed), runs its share of the tasks
        (:func:`shard`), and the gradients are averaged with one all-reduce before the same
        optimizer step everywhere: data-parallel training, as DDP does it (the parameters are a
        dict of tensors, not an ``nn.Module``, so the all-reduce is called here)."""
        rank, world = self.rank, self.world
        if world > 1 and self.splits_tasks and self.meta.tasks_per_batch % world:
            raise InputError(f"meta.tasks_per_batch = {self.meta.tasks_per_batch} does not "
                             f"split over {world} processes")

        def batch() -> Batch:
            b = self.make_batch(sampler, self.meta.tasks_per_batch)
            return shard(b, rank, world) if world > 1 else b

        info = self.update(batch)
        if world > 1:
            info = self._mean_info(info)
        self._constrain()
        self.iteration += 1
        info["iteration"] = self.iteration
        info["inner_lr"] = float(self.lrs()["w_out"].detach())
        return info

    def _all_reduce_grads(self) -> None:
        """Average every gradient over the processes (one flat all-reduce)."""
        if self.world <= 1:
            return
        import torch.distributed as dist

        params = [t for g in self.opt.param_groups for t in g["params"] if t.grad is not None]
        flat = torch.cat([t.grad.reshape(-1) for t in params])
        dist.all_reduce(flat)
        flat /= self.world
        at = 0
        for t in params:
            t.grad.copy_(flat[at:at + t.numel()].view_as(t.grad))
            at += t.numel()

    def _mean_info(self, info: dict) -> dict:
        import torch.distributed as dist

        keys = [k for k in ("task_loss", "acc", "layout", "rate") if k in info]
        v = torch.tensor([float(info[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(v)
        return dict(info, **{k: float(x) / self.world for k, x in zip(keys, v)})

    @torch.no_grad()
    def _constrain(self) -> None:
        p, m = self.core.params, self.core.masks
        p["w_in"].mul_(m["w_in"])
        p["w_rec"].mul_(m["w_rec"])
        if self.cfg.kind != "lif":                   # clipping and pruning shape the spiking core
            return
        if self.cfg.dense:                           # the dense baseline: clipped, never pruned
            prune = False
        else:
            prune = bool(self.reg.prune_below) and self.iteration >= self.reg.prune_after
        nz = p["w_rec"][m["w_rec"] > 0]
        if nz.numel() > 1 and self.reg.clip_std:
            lim = float(self.reg.clip_std * nz.std())
            p["w_rec"].clamp_(-lim, lim)
        if prune:
            dead = (p["w_rec"].abs() < self.reg.prune_below) & (m["w_rec"] > 0)
            m["w_rec"][dead] = 0.0
            p["w_rec"][dead] = 0.0
            self.refresh_cost()
