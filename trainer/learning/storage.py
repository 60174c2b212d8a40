"""Model storage: the training checkpoint (``checkpoint.pt``), the model bundle
(``model.tsb``, :mod:`.bundle`) and the trained :class:`Model`.

A checkpoint is what a run resumes from: a ``torch.save`` of plain containers and tensors, tagged
``format = "tessera-checkpoint/1"``: the training config and core config (JSON), the iteration,
the core's parameters and layout masks, the meta-learned log learning rates, the Adam state, the
random states and any classifier head. It is loaded with ``torch.load(weights_only=True)``:
nothing is unpickled beyond tensors and containers. A finished model is a bundle: one versioned
file with the weights, the config, the front-end's level equalization and the open-set
calibration, no JSON inside a torch file and nothing found beside it by folder. :class:`Model`
reads either (a checkpoint, or a ``model.pt`` of an earlier tessera, carries no calibration).
Writes go to a temporary file first and replace the old one atomically.
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
           "load_checkpoint", "restore_trainer", "model_state", "save_bundle", "set_level_eq",
           "copy_params", "refuse_in_place"]

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


def copy_params(core, state: dict, partial: bool = False) -> None:
    """A saved state's parameters and layout masks into ``core`` (the one place they are
    copied: a resumed run, a loaded model, a model's core taken to start another run);
    ``partial``: only the parameters ``core`` has in the same shape (a run of other classes)."""
    with torch.no_grad():
        for group in ("params", "masks"):
            mine = getattr(core, group)
            for k, v in state.get(group, {}).items():
                v = torch.as_tensor(v)
                if not partial or (k in mine and mine[k].shape == v.shape):
                    mine[k].copy_(v)


def restore_trainer(tr, state: dict) -> None:
    """Put a checkpoint's state back into the MetaTrainer ``tr`` (for ``--resume``)."""
    copy_params(tr.core, state)
    with torch.no_grad():
        for k, v in state["log_lr"].items():
            tr.log_lr[k].copy_(v)
        for k, v in state.get("head", {}).items():
            tr.head[k].copy_(v)
    tr.opt.load_state_dict(state["opt"])
    tr.rng.bit_generator.state = json.loads(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    tr.iteration = int(state["iteration"])
    tr.refresh_cost()


def model_state(path: str) -> dict:
    """A model file's state, a bundle or a checkpoint alike: ``config`` and ``core`` (maps),
    ``iteration``, ``params``, ``masks`` and ``log_lr`` (tensors), ``extra`` (map),
    ``level_eq`` and ``calibration`` (maps or None; a checkpoint carries no calibration)."""
    from .bundle import is_bundle, read_bundle

    if is_bundle(path):
        doc, arrays = read_bundle(path)
        out = {k: doc[k] for k in ("config", "core", "iteration", "extra", "level_eq",
                                   "calibration")}
        for group in ("params", "masks", "log_lr"):
            out[group] = {n.split("/", 1)[1]: torch.from_numpy(np.array(a))
                          for n, a in arrays.items() if n.startswith(group + "/")}
        return out
    state = load_checkpoint(path)
    extra = json.loads(state.get("extra", "{}") or "{}")
    return dict(config=json.loads(state["config"]), core=json.loads(state["core"]),
                iteration=int(state["iteration"]), params=state["params"],
                masks=state["masks"], log_lr=state["log_lr"], extra=extra,
                level_eq=extra.get("level_eq"), calibration=None)


def save_bundle(path: str, state: dict, **changes) -> int:
    """Write ``state`` (as :func:`model_state` gives, or a checkpoint's, whose JSON strings are
    read) as a model bundle at ``path``, with ``changes`` (``calibration``, ``level_eq``,
    ``extra``) over it; returns its size."""
    from .bundle import write_bundle

    doc = {k: json.loads(v) if isinstance(v, str) else v for k, v in state.items()
           if k in ("config", "core", "extra")}
    doc["iteration"] = int(state["iteration"])
    doc["extra"] = dict(doc.get("extra") or {})
    doc["level_eq"] = state.get("level_eq", doc["extra"].pop("level_eq", None))
    doc["extra"].pop("level_eq", None)
    doc["calibration"] = state.get("calibration")
    doc.update(changes)
    arrays = {f"{g}/{k}": v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
              for g in ("params", "masks", "log_lr") for k, v in state[g].items()}
    return write_bundle(path, doc, arrays)


class Model:
    """A trained model loaded from a bundle (``model.tsb``) or a checkpoint (frozen core +
    rule), with its front-end's level equalization and its open-set calibration."""

    def __init__(self, path: str):
        from .model import Core, CoreConfig

        state = model_state(path)
        self.path = path
        self.state = state
        self.config = config_from_dict(state["config"])
        core_cfg = CoreConfig(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in state["core"].items()})
        self.core = Core(core_cfg)
        copy_params(self.core, state)
        self.lrs = {k: v.exp() for k, v in state["log_lr"].items()}
        self.iteration = int(state["iteration"])
        self.extra = dict(state["extra"])
        if state["level_eq"] is not None:
            self.extra["level_eq"] = state["level_eq"]
        self.calibration = state["calibration"]

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


def set_level_eq(model_path: str, out: str, reference: str | None = None, *,
                 shift: int | None = None, gate: int | None = None, prior: int | None = None,
                 remove: bool = False) -> dict:
    """A new bundle at ``out``: the model at ``model_path`` with the front-end's level
    equalization (see :func:`reference_eq`); ``reference``, ``shift`` and ``gate`` default to the
    model's own, then to its training config's ``data.level_eq`` and the equalizer's defaults.
    The model file itself is never rewritten. Returns the map."""
    from ...runtime.leveleq import LevelEq
    from ..data.levels import level_eq_of, reference_eq

    refuse_in_place(model_path, out)
    state = model_state(model_path)
    old = state["level_eq"] or {}
    if remove:
        d = None
    else:
        ref = reference or (None if old else state["config"].get("data", {}).get("level_eq"))
        if not ref and not old:
            raise InputError("no reference corpus: pass --reference CORPUS (a --keep-audio "
                             "corpus)", source=model_path)
        defaults = LevelEq(np.zeros(1, np.int64))
        params = dict(gate=gate if gate is not None else old.get("gate", defaults.gate),
                      shift=shift if shift is not None else old.get("shift", defaults.shift),
                      prior=prior if prior is not None else old.get("prior", defaults.prior),
                      frac=defaults.frac)                # precision: always this firmware's
        d = reference_eq(ref, **params) if ref else dict(old, **params)
        level_eq_of(d)                                   # checked before it is written
    save_bundle(out, state, level_eq=d)
    return d or {}


def refuse_in_place(model_path: str, out: str) -> None:
    """A command that writes a new model file refuses to write over the one it read."""
    if os.path.exists(out) and os.path.samefile(model_path, out):
        raise InputError("writes a new model file: --out must not be the model itself",
                         source=out)
