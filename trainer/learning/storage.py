"""Model storage: checkpoints (``checkpoint.pt``, ``model.pt``) and the trained :class:`Model`.

A checkpoint is a ``torch.save`` of plain containers and tensors, tagged
``format = "tessera-checkpoint/1"``: the training config and core config (JSON), the iteration,
the core's parameters and layout masks, the meta-learned log learning rates, and, for resuming,
the Adam state, the random states and any classifier head. It is loaded with
``torch.load(weights_only=True)``: nothing is unpickled beyond tensors and containers. Writes go to
a temporary file first and replace the old one atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import torch

from ...runtime.errors import InputError
from .config import Config, config_from_dict, config_to_dict

__all__ = ["CHECKPOINT_FORMAT", "Model", "load_model", "checkpoint_state", "save_checkpoint",
           "load_checkpoint", "restore_trainer"]

CHECKPOINT_FORMAT = "tessera-checkpoint/1"


def checkpoint_state(tr, cfg: Config, extra: dict | None = None) -> dict:
    """Everything needed to resume the :class:`~tessera.trainer.learning.fewshot.MetaTrainer` ``tr``."""
    return dict(format=CHECKPOINT_FORMAT, config=json.dumps(config_to_dict(cfg)),
                core=json.dumps(dataclasses.asdict(tr.cfg)), iteration=tr.iteration,
                params={k: v.detach().clone() for k, v in tr.core.params.items()},
                masks={k: v.clone() for k, v in tr.core.masks.items()},
                log_lr={k: v.detach().clone() for k, v in tr.log_lr.items()},
                opt=tr.opt.state_dict(), rng=json.dumps(tr.rng.bit_generator.state),
                torch_rng=torch.get_rng_state(), extra=json.dumps(extra or {}),
                head={k: v.detach().clone() for k, v in tr.head.items()})


def save_checkpoint(path: str, state: dict) -> None:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    """The checkpoint at ``path``; a named error for a missing, unreadable or foreign file."""
    if not os.path.exists(path):
        raise InputError("no such checkpoint", source=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:                                     # noqa: BLE001  (torch raises many)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(f"not a readable tessera checkpoint ({type(exc).__name__}: {first})",
                         source=path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError("not a tessera checkpoint (format tag missing)", source=path)
    return state


def restore_trainer(tr, state: dict) -> None:
    """Put a checkpoint's state back into the MetaTrainer ``tr`` (for ``--resume``)."""
    with torch.no_grad():
        for k, v in state["params"].items():
            tr.core.params[k].copy_(v)
        for k, v in state["masks"].items():
            tr.core.masks[k].copy_(v)
        for k, v in state["log_lr"].items():
            tr.log_lr[k].copy_(v)
        for k, v in state.get("head", {}).items():
            tr.head[k].copy_(v)
    tr.opt.load_state_dict(state["opt"])
    tr.rng.bit_generator.state = json.loads(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    tr.iteration = int(state["iteration"])
    tr.refresh_cost()


class Model:
    """A trained model loaded from ``model.pt`` / ``checkpoint.pt`` (frozen core + rule)."""

    def __init__(self, path: str):
        from .model import Core, CoreConfig

        state = load_checkpoint(path)
        self.path = path
        self.config = config_from_dict(json.loads(state["config"]))
        core_cfg = CoreConfig(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in json.loads(state["core"]).items()})
        self.core = Core(core_cfg)
        with torch.no_grad():
            for k, v in state["params"].items():
                self.core.params[k].copy_(v)
            for k, v in state["masks"].items():
                self.core.masks[k].copy_(v)
        self.lrs = {k: v.exp() for k, v in state["log_lr"].items()}
        self.iteration = int(state["iteration"])
        self.extra = json.loads(state.get("extra", "{}"))

    @property
    def method(self) -> str:
        """What the model is, for result tables: tessera, dense-srnn, gru or transfer."""
        if self.config.meta.algorithm == "transfer":
            return "transfer"
        if self.core.cfg.kind == "gru":
            return "gru"
        if self.core.cfg.dense:
            return "dense-srnn"
        return "tessera" if self.config.meta.algorithm == "anil" else self.config.meta.algorithm


    @property
    def level_eq(self):
        """The front-end's long-term level equalization the model was trained with
        (:class:`~tessera.runtime.leveleq.LevelEq` over the 700 channels), or None."""
        from ..data.levels import level_eq_of
        return level_eq_of(self.extra.get("level_eq"))


def load_model(path: str) -> Model:
    return Model(path)


def set_level_eq(model_path: str, reference: str | None = None, *, shift: int | None = None,
                 gate: int | None = None, prior: int | None = None, remove: bool = False
                 ) -> dict:
    """Write the front-end's level equalization into the model file ``model_path`` (see
    :func:`reference_eq`); ``reference``, ``shift`` and ``gate`` default to the model's own, then
    to its training config's ``data.level_eq`` and the equalizer's defaults. Returns the map."""
    import json as _json

    from ...runtime.leveleq import LevelEq
    from ..data.levels import level_eq_of, reference_eq

    state = load_checkpoint(model_path)
    extra = _json.loads(state.get("extra", "{}") or "{}")
    old = extra.get("level_eq") or {}
    if remove:
        extra.pop("level_eq", None)
        d = {}
    else:
        ref = reference or (None if old else
                            _json.loads(state["config"]).get("data", {}).get("level_eq"))
        if not ref and not old:
            raise InputError("no reference corpus: pass --reference CORPUS (a --keep-audio "
                             "corpus)", source=model_path)
        defaults = LevelEq(np.zeros(1, np.int64))
        params = dict(gate=gate if gate is not None else old.get("gate", defaults.gate),
                      shift=shift if shift is not None else old.get("shift", defaults.shift),
                      prior=prior if prior is not None else old.get("prior", defaults.prior),
                      frac=defaults.frac)                # precision: always this firmware's
        if ref:
            d = reference_eq(ref, **params)
        else:
            d = dict(old, **params)
        level_eq_of(d)                                   # checked before it is written
        extra["level_eq"] = d
    state["extra"] = _json.dumps(extra)
    save_checkpoint(model_path, state)
    return d
