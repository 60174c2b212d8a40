"""What `tessera pretrain` optimises beyond the plain classifier, and how it perturbs its input.

Issue 34's ladder measures each of these as one factor of a
:class:`~tessera.trainer.learning.pretrain.Recipe` (BENCHMARKS.md, "Issue 34 (session 3)"):

- :func:`episode_loss`: the device rule's episodes inside a batch (a word's shot by one person,
  its queries by others; scaled cosines), the ``proto`` and ``anil`` objectives;
- :func:`margin_logits`: an additive-margin cosine classifier (AM-softmax: the logit of the true
  word is ``s (cos - m)``), the same cosine the device's prototypes use (``margin``);
- :func:`teacher_loss` and :func:`teacher_targets`: the peer's embedding (Google's speech
  embedding, the training teacher, never on the device) of each training recording as a second
  target, predicted from the readout features by a linear head (``teacher``);
- :func:`augment`: SpecAugment-style time and channel masks (``mask``) and a random spectral
  tilt and level per utterance (``tilt``), training only; the chip never sees them.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["episode_loss", "margin_logits", "teacher_loss", "teacher_targets", "augment"]

#: AM-softmax's scale (the usual 30: a cosine of 1 against 0 is a logit gap of 30)
MARGIN_SCALE = 30.0


def episode_loss(E: torch.Tensor, y: np.ndarray, spk: np.ndarray, scale: torch.Tensor,
                 rng: np.random.Generator) -> torch.Tensor:
    """Two 5-way episodes inside the batch: each word's shot by one person, its queries by
    the others; cross-entropy of the scaled cosines (the device rule)."""
    En = F.normalize(E, dim=1, eps=1e-8)
    losses = []
    ok = [w for w in np.unique(y) if len(np.unique(spk[y == w])) >= 2]
    for _ in range(2 if len(ok) >= 5 else 0):
        sup, qry, ql = [], [], []
        for k, c in enumerate(rng.choice(ok, 5, replace=False)):
            idx = np.flatnonzero(y == c)
            s = rng.choice(idx)
            others = idx[spk[idx] != spk[s]]
            sup.append(s)
            qry += list(others)
            ql += [k] * len(others)
        losses.append(F.cross_entropy(scale * En[qry] @ En[sup].T, torch.tensor(ql)))
    return torch.stack(losses).mean() if losses else E.sum() * 0


def margin_logits(E: torch.Tensor, W: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """AM-softmax logits: ``MARGIN_SCALE * (cos(E, W_c) - margin [c == y])``."""
    cos = F.normalize(E, dim=1, eps=1e-8) @ F.normalize(W, dim=0, eps=1e-8)
    return MARGIN_SCALE * (cos - margin * F.one_hot(y, cos.shape[1]).to(cos.dtype))


def teacher_loss(E: torch.Tensor, head: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """1 - cosine between the head's prediction from the features and the teacher's embedding
    (rows of ``T`` that are all zero, recordings the teacher never heard, are left out)."""
    have = T.abs().sum(1) > 0
    if not bool(have.any()):
        return E.sum() * 0
    pred = F.normalize(E[have] @ head, dim=1, eps=1e-8)
    return (1 - (pred * F.normalize(T[have], dim=1, eps=1e-8)).sum(1)).mean()


def teacher_targets(hs, idx: np.ndarray, progress: bool = False) -> np.ndarray:
    """The teacher's mean embedding of recordings ``idx`` of a hear set (len(idx), 96) float32,
    zeros where the hear set names no recording (its TTS part); computed once and cached by the
    recordings' names."""
    from ..data.readers import default_cache_dir
    from .teacher import recording_embeddings, save_cached

    paths = [str(p) for p in hs.path[idx]]
    key = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:20]
    cfile = os.path.join(default_cache_dir(), "teacher", f"hear-{key}.npy")
    if os.path.exists(cfile):
        try:
            return np.load(cfile)
        except (OSError, ValueError):
            pass                                        # a damaged cache entry is recomputed
    out = np.zeros((len(idx), 96), np.float32)
    have = np.flatnonzero([bool(p) for p in paths])
    if have.size:
        out[have] = recording_embeddings([paths[i] for i in have], progress=progress)
    save_cached(cfile, out)
    return out


def augment(X: torch.Tensor, lens: torch.Tensor, mask: int, tilt: float,
            gen: torch.Generator) -> torch.Tensor:
    """A training copy of the counts ``X`` (B, T, C): ``mask`` time masks (each up to a tenth of
    the utterance) and ``mask`` channel masks (each up to 20 channels) set to zero, then each
    channel times ``exp(tilt * (u (2 c / (C - 1) - 1) + v / 2))`` with u, v uniform in [-1, 1]
    per utterance (a random spectral slope and level)."""
    B, T, C = X.shape
    X = X.clone()
    for b in range(B if mask else 0):
        L = max(int(lens[b]), 1)
        for _ in range(mask):
            w = int(torch.randint(0, max(L // 10, 1) + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(L - w, 0) + 1, (1,), generator=gen))
            X[b, t0:t0 + w] = 0
            w = int(torch.randint(0, 21, (1,), generator=gen))
            c0 = int(torch.randint(0, max(C - w, 0) + 1, (1,), generator=gen))
            X[b, :, c0:c0 + w] = 0
    if tilt:
        u, v = (torch.rand(2, B, 1, 1, generator=gen) * 2 - 1)
        ramp = torch.linspace(-1.0, 1.0, C)[None, None]
        X = X * torch.exp(tilt * (u * ramp + v / 2))
    return X
