"""Meta-learning with torch.func: ANIL (the device rule), MAML, FOMAML and Reptile.

Inner loop: SGD on a task's support set, ``steps`` steps, per-parameter learning rates (optionally
meta-learned, as log learning rates). Outer loop: Adam on the query loss (Reptile: on the
difference between the initial and the adapted parameters).

The device rule (the default, ``rule = "prototype"``) is ANIL whose one readout step writes each
word's own column: ``W_k`` = the mean of word k's shot features, and a query scores
``lr * cos(phi, W_k)`` (``lr``, meta-learned, is the softmax temperature of training; the chip
uses the cosines themselves). It is what the chip's ``enroll`` runs (runtime/chip.py): one column
per word, so words enrolled one at a time in any order give the same readout as all at once.
``rule = "softmax-step"`` is the earlier rule: one SGD step of the cross-entropy from a zero
readout over all the episode's words jointly, ``W_k = lr / N * sum_i (y_ik - 1/K) phi_i``; its
argmax equals the prototype rule's dot product for balanced shots, but a device that enrolls one
word at a time cannot run it (each step pushes the older words down).

``transfer`` is the transfer-learning baseline, not meta-learning: the core is pretrained with an
ordinary classifier over every seen class (batches of ``tasks_per_batch * 8`` utterances), and at
test time the zero readout is fine-tuned on the shots with ``inner_steps`` SGD steps at
``inner_lr`` (not learned).

Inner updates can pass through ``update_transform`` (quantized, thresholded, error-triggered
updates of the hardware-aware recipes in :mod:`tessera.trainer.learning.rram`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import grad

from .model import readout_logits

__all__ = ["MetaConfig", "inner_adapt", "readout_loss", "anil_task_loss", "prototype_logits",
           "open_set_logits",
           "reptile_delta"]

READOUT = ("w_out", "b_out")


@dataclass(frozen=True)
class MetaConfig:
    algorithm: str = "anil"          # anil | maml | fomaml | reptile | transfer (a baseline)
    inner_steps: int = 1
    inner_lr: float = 20.0           # readout learning rate (the device's, before meta-learning)
    inner_lr_core: float = 0.05      # MAML/Reptile: learning rate of the core's parameters
    learn_inner_lr: bool = True      # meta-learn log learning rates per parameter group
    outer_lr: float = 1e-3
    tasks_per_batch: int = 8
    bptt: int | None = None          # truncate backpropagation to the last N steps
    rule: str = "prototype"          # anil's readout rule: prototype (the chip's) | softmax-step
    margin: float = 0.0              # prototype rule: additive cosine margin on the true word
    #                                  in training (AM-softmax: wider gaps between words)
    open_ways: int = 0               # prototype rule: words per episode that are NOT enrolled;
    #                                  their queries must answer "none" (a learned cosine threshold)
    global_weight: float = 0.0       # anil: + this x a cosine classifier's cross-entropy over
    #                                  every seen word on the episode's utterances (one word's
    #                                  utterances pulled together across all voices, not 5 at a time)
    teacher_weight: float = 0.0      # anil: + this x a distillation loss from the teacher's
    #                                  embeddings (trainer/learning/teacher.py) of the batch's utterances
    teacher_mode: str = "relational"  # relational: the correlation of each utterance's cosine
    #                                  similarities to the batch with the teacher's (segment-aligned
    #                                  sequence, centred); relational-mean: the same on the
    #                                  teacher's mean over segments; frames: a linear map of the
    #                                  features predicts each segment's teacher embedding (cosine)
    supcon_weight: float = 0.0       # anil: + this x a supervised contrastive loss over the batch:
    #                                  one word by other voices pulled together, everything else apart
    supcon_temp: float = 0.1
    hard_negative: float = 2.0       # weight, in the contrastive denominator, of the same voice
    #                                  saying another word (the negatives a voice invariance needs)
    voice_weight: float = 0.0        # anil: a voice classifier on the features through gradient
    #                                  reversal (an adversary: features that do not tell the voice)

    def __post_init__(self) -> None:
        if self.rule not in ("prototype", "softmax-step"):
            raise ValueError(f"unknown readout rule {self.rule!r} (prototype or softmax-step)")
        if not 0.0 <= self.margin < 1.0 or (self.margin and self.rule != "prototype"):
            raise ValueError("margin needs rule = 'prototype' and must be in [0, 1)")
        if self.open_ways < 0 or (self.open_ways and self.rule != "prototype"):
            raise ValueError("open_ways needs rule = 'prototype' and must be >= 0")
        if self.algorithm not in ("anil", "maml", "fomaml", "reptile", "transfer"):
            raise ValueError(f"unknown meta-learning algorithm {self.algorithm!r}")
        for name in ("global_weight", "teacher_weight", "supcon_weight", "voice_weight"):
            if getattr(self, name) < 0 or (getattr(self, name) and self.algorithm != "anil"):
                raise ValueError(f"{name} needs algorithm = 'anil' and must be >= 0")
        if self.teacher_mode not in ("relational", "relational-mean", "frames"):
            raise ValueError(f"unknown teacher_mode {self.teacher_mode!r} (relational, "
                             "relational-mean or frames)")
        if self.supcon_temp <= 0 or self.hard_negative <= 0:
            raise ValueError("supcon_temp and hard_negative must be > 0")
        if self.algorithm == "reptile" and self.inner_steps < 2:
            # from a zero readout the first step moves only the readout: the core needs a second
            raise ValueError("reptile needs inner_steps >= 2 (the readout starts at zero)")


def readout_loss(fast: dict, phi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(readout_logits(phi, fast["w_out"], fast["b_out"]), y)


def inner_adapt(fast: dict, loss_fn: Callable[[dict], torch.Tensor], lrs: dict, steps: int,
                first_order: bool = False,
                update_transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> dict:
    """``steps`` SGD steps on ``loss_fn`` from ``fast`` with per-name learning rates ``lrs``.

    Gradients come from ``torch.func.grad``; with ``first_order`` they are detached (FOMAML),
    otherwise the outer loss differentiates through them (second-order MAML).
    """
    g_fn = grad(loss_fn)
    for _ in range(steps):
        grads = g_fn(fast)
        new = {}
        for name, value in fast.items():
            g = grads[name].detach() if first_order else grads[name]
            delta = -lrs[name] * g
            if update_transform is not None:
                delta = update_transform(name, delta)
            new[name] = value + delta
        fast = new
    return fast


def zero_readout(like: dict, ways: int) -> dict:
    n = like["w_out"].shape[0]
    ref = like["w_out"]
    return {"w_out": ref.new_zeros(n, ways), "b_out": ref.new_zeros(ways)}


def prototype_logits(phi_s: torch.Tensor, y_s: torch.Tensor, phi_q: torch.Tensor, ways: int,
                     scale: torch.Tensor) -> torch.Tensor:
    """The device rule: ``scale * cos(phi_q, mean of each word's shots)`` (queries x ways)."""
    onehot = F.one_hot(y_s, ways).to(phi_s.dtype)
    protos = (onehot.T @ phi_s) / onehot.sum(0).clamp(min=1)[:, None]
    return scale * (F.normalize(phi_q, dim=1, eps=1e-8) @ F.normalize(protos, dim=1, eps=1e-8).T)


def open_set_logits(phi_s: torch.Tensor, y_s: torch.Tensor, phi_q: torch.Tensor, ways: int,
                    scale: torch.Tensor, none_cos: torch.Tensor) -> torch.Tensor:
    """The prototype rule over the ``ways`` enrolled words (supports with ``y_s < ways``) plus a
    "none of these" logit ``scale * none_cos``: queries of other words should pick it."""
    keep = y_s < ways
    logits = prototype_logits(phi_s[keep], y_s[keep], phi_q, ways, scale)
    return torch.cat([logits, (scale * none_cos).expand(len(phi_q), 1)], 1)


def anil_task_loss(phi_s: torch.Tensor, y_s: torch.Tensor, phi_q: torch.Tensor,
                   y_q: torch.Tensor, readout_init: dict, lrs: dict, steps: int,
                   update_transform=None) -> tuple[torch.Tensor, torch.Tensor]:
    """ANIL on one task with the softmax-step rule: adapt the readout on the support features,
    score the queries."""
    fast = inner_adapt(readout_init, lambda f: readout_loss(f, phi_s, y_s), lrs, steps,
                       update_transform=update_transform)
    logits = readout_logits(phi_q, fast["w_out"], fast["b_out"])
    return F.cross_entropy(logits, y_q), (logits.argmax(1) == y_q).float().mean()


def reptile_delta(initial: dict, adapted: dict) -> dict:
    """Reptile's meta-gradient: initial - adapted (fed to Adam as a gradient)."""
    return {k: initial[k].detach() - adapted[k].detach() for k in adapted}
