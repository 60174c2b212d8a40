"""One class per meta-learning algorithm, behind :class:`~.fewshot.MetaTrainer`'s one
interface: ``update(batch)`` does one meta-batch (``batch()`` draws this process's share) and
returns what it measured. The shared part (the core, the learning rates, the regularisers, the
data-parallel step) is the base class's; :func:`trainer_class` picks the class of a config's
``meta.algorithm``.

* :class:`ANIL`: the core is frozen inside a task, the readout adapts: the device rule
  (``meta.rule`` prototype: a column per word from its shots, cosines; ``meta.open_ways``: the
  last ways are not enrolled and must score below a learned "none" cosine; ``meta.margin``:
  the true word must win by a margin), or ``meta.inner_steps`` gradient steps of a softmax
  readout;
* :class:`MAML` / :class:`FOMAML`: the whole network adapts in the inner loop (second- or
  first-order outer gradient);
* :class:`Reptile`: SGD on each task from the current core, then a step towards the adapted
  cores;
* :class:`Transfer`: the baseline: a classifier over every seen word, no episodes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...runtime.errors import InputError
from .fewshot import MetaTrainer
from .meta import (READOUT, anil_task_loss, inner_adapt, open_set_logits, prototype_logits,
                   readout_loss, zero_readout)
from .model import core_features, readout_logits

__all__ = ["ANIL", "MAML", "FOMAML", "Reptile", "Transfer", "TRAINERS", "trainer_class"]


class ANIL(MetaTrainer):
    def update(self, batch) -> dict:
        b = batch()
        meta, lrs = self.meta, self.lrs()
        phi, rate = self.core.features(b.x, params=self.device_params(), bptt=meta.bptt)
        transform = self.update_transform()
        losses, accs = [], []
        for s, q, ys, yq in b.tasks:
            ways = int(ys.max()) + 1
            if meta.rule == "prototype" and meta.open_ways:
                k = ways - meta.open_ways            # the last open_ways words are not enrolled
                logits = open_set_logits(phi[s], ys, phi[q], k, lrs["w_out"], lrs["none_cos"])
                target = yq.clamp(max=k)
            elif meta.rule == "prototype":
                logits, target = prototype_logits(phi[s], ys, phi[q], ways, lrs["w_out"]), yq
                if meta.margin:                      # the true word must win by the margin
                    logits = logits - lrs["w_out"] * meta.margin * F.one_hot(yq, ways)
            else:
                init = zero_readout(self.core.params, ways)
                loss, acc = anil_task_loss(phi[s], ys, phi[q], yq, init,
                                           {k: lrs[k] for k in init}, meta.inner_steps, transform)
                losses.append(loss)
                accs.append(acc)
                continue
            losses.append(F.cross_entropy(logits, target))
            accs.append((logits.argmax(1) == target).float().mean())
        total, info = self.outer_total(torch.stack(losses).mean(), rate, b, phi)
        self.descend(total)
        return dict(info, acc=float(torch.stack(accs).mean()))


class MAML(MetaTrainer):
    first_order = False

    def update(self, batch) -> dict:
        b = batch()
        meta, lrs = self.meta, self.lrs()
        device, transform = self.device_params(), self.update_transform()
        losses, accs, rates = [], [], []
        for s, q, ys, yq in b.tasks:
            fast = dict(device, **zero_readout(self.core.params, int(ys.max()) + 1))
            x_s, x_q = b.x[s], b.x[q]

            def inner_loss(f, x_s=x_s, ys=ys):
                phi_s, _ = core_features(x_s, f, self.cfg, self.core.masks, meta.bptt)
                return readout_loss(f, phi_s, ys)

            fast = inner_adapt(fast, inner_loss, lrs, meta.inner_steps,
                               first_order=self.first_order, update_transform=transform)
            phi_q, rate = core_features(x_q, fast, self.cfg, self.core.masks, meta.bptt)
            rates.append(rate)
            logits = readout_logits(phi_q, fast["w_out"], fast["b_out"])
            losses.append(F.cross_entropy(logits, yq))
            accs.append((logits.argmax(1) == yq).float().mean())
        total, info = self.outer_total(torch.stack(losses).mean(), torch.stack(rates).mean(0), b)
        self.descend(total)
        return dict(info, acc=float(torch.stack(accs).mean()))


class FOMAML(MAML):
    first_order = True


class Reptile(MetaTrainer):
    def update(self, batch) -> dict:
        b = batch()
        p, meta = self.core.params, self.meta
        lrs = {k: float(v.detach()) for k, v in self.lrs().items()}
        deltas = {k: torch.zeros_like(v) for k, v in p.items() if k not in READOUT}
        accs, rates = [], []
        for s, q, ys, yq in b.tasks:
            fast = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()
                    if k not in READOUT}
            fast.update({k: v.requires_grad_(True)
                         for k, v in zero_readout(p, int(ys.max()) + 1).items()})
            x = b.x[torch.cat([torch.arange(s.start, s.stop), torch.arange(q.start, q.stop)])]
            y = torch.cat([ys, yq])
            for _ in range(meta.inner_steps):
                phi, rate = core_features(x, fast, self.cfg, self.core.masks, meta.bptt, fused=True)
                grads = torch.autograd.grad(readout_loss(fast, phi, y), list(fast.values()))
                with torch.no_grad():
                    for (k, v), g in zip(fast.items(), grads):
                        v -= lrs[k] * g
            accs.append(float((readout_logits(phi, fast["w_out"], fast["b_out"]).argmax(1) == y
                               ).float().mean()))
            rates.append(rate.detach())
            for k in deltas:
                deltas[k] += (p[k].detach() - fast[k].detach()) / len(b.tasks)
        self.opt.zero_grad()
        for k, d in deltas.items():
            p[k].grad = d
        self._all_reduce_grads()
        self.opt.step()
        self.last_rate = float(torch.stack(rates).mean())
        return dict(task_loss=float("nan"), acc=float(np.mean(accs)), layout=0.0,
                    rate=self.last_rate)


class Transfer(MetaTrainer):
    """The transfer baseline: cross-entropy over every seen word, no episodes."""
    learns_inner_lr = False
    word_classifier = True
    splits_tasks = False                             # each process draws its share of words

    def update(self, batch) -> dict:
        idx = self.rng.choice(self.train_pool, size=self.meta.tasks_per_batch * 8, replace=False)
        idx = idx[self.rank::self.world]                 # this process's share
        y = torch.from_numpy(self.class_index[self.data.labels[idx]])
        phi, rate = self.core.features(torch.from_numpy(self._draw(idx)),
                                       params=self.device_params(), bptt=self.meta.bptt)
        logits = readout_logits(phi, self.head["w_cls"], self.head["b_cls"])
        total, info = self.outer_total(F.cross_entropy(logits, y), rate, None)
        self.descend(total)
        return dict(info, acc=float((logits.argmax(1) == y).float().mean()))


TRAINERS = {"anil": ANIL, "maml": MAML, "fomaml": FOMAML, "reptile": Reptile,
            "transfer": Transfer}


def trainer_class(algorithm: str) -> type[MetaTrainer]:
    """The class of ``meta.algorithm``."""
    try:
        return TRAINERS[algorithm]
    except KeyError:
        raise InputError(f"meta.algorithm {algorithm!r}: one of {', '.join(TRAINERS)}") \
            from None


