"""Meta-training's auxiliary losses on the readout features: the speaker-invariance
(supervised contrastive) loss and the teacher's relational (similarity-structure) loss."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["relational_loss", "supcon_loss"]


def relational_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - the mean Pearson correlation, over the batch's rows, between the student's cosine
    similarities of an utterance to the others and the teacher's (the diagonal left out): the
    batch's similarity structure, free of each model's scale and offset."""
    def sims(z):
        z = F.normalize(z, dim=1, eps=1e-8)
        s = z @ z.T
        n = s.shape[0]
        return s.masked_select(~torch.eye(n, dtype=torch.bool)).view(n, n - 1)
    a, b = sims(student), sims(teacher.detach())
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)
    return 1 - r.mean()


def supcon_loss(phi: torch.Tensor, labels: np.ndarray, speakers: np.ndarray | None,
                temp: float = 0.1, hard: float = 2.0) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on the normalized features: each
    utterance's other utterances of the same word are its positives; an utterance of another
    word by the same voice counts ``hard`` times in the denominator (the negative a voice-invariant
    feature must push away hardest)."""
    z = F.normalize(phi, dim=1, eps=1e-8)
    n = z.shape[0]
    logits = z @ z.T / temp
    y = torch.from_numpy(np.asarray(labels))
    eye = torch.eye(n, dtype=torch.bool)
    pos = (y[:, None] == y[None, :]) & ~eye
    if speakers is not None and hard != 1.0:
        v = torch.from_numpy(np.asarray(speakers))
        same_voice_other_word = (v[:, None] == v[None, :]) & (y[:, None] != y[None, :])
        logits = logits + math.log(hard) * same_voice_other_word
    logits = logits.masked_fill(eye, float("-inf"))
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    has = pos.any(1)
    if not has.any():
        return phi.sum() * 0.0
    per = (logp.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp(min=1))[has]
    return -per.mean()
