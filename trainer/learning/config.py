"""Training configuration: TOML files with command-line overrides, frozen and strict.

A config has sections ``[data]``, ``[core]``, ``[meta]``, ``[reg]``, ``[rram]`` and ``[train]``;
each maps onto a frozen dataclass, and an unknown key anywhere is an error naming it (a misspelled
key is never silently ignored). Overrides use dotted keys: ``meta.inner_lr=10``.

    >>> cfg = load_config(None, ["meta.inner_steps=1", "train.iterations=5"])
    >>> cfg.meta.inner_steps, cfg.train.iterations
    (1, 5)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field

from ...runtime.errors import InputError
from .fewshot import RegConfig
from .meta import MetaConfig
from .model import CoreConfig
from .rram import RRAMTrainConfig

__all__ = ["DataConfig", "TrainLoopConfig", "Config", "load_config", "config_to_dict",
           "config_from_dict", "QUICK"]


@dataclass(frozen=True)
class DataConfig:
    corpus: str = ""                 # corpus .h5, SHD folder or WAV folder
    extra_corpora: tuple[str, ...] = ()   # meta-training only: their train-split voices' words
    steps: int = 100
    duration: float = 1.0
    channel_subsets: int = 3
    unseen: tuple[int, ...] = (0, 3, 4, 11, 12)
    ways: int = 5
    shots: tuple[int, ...] = (1, 5)  # training episodes draw their shot count from these
    queries: int = 5
    cross_speaker_train: float = 0.0  # share of meta-training episodes whose shots come from one
    #                                   voice and queries from others (enroll one person, ask another)
    level_eq: str = ""               # the reference corpus (built with --keep-audio) the training
    #   corpora were equalized to (tessera corpus level-eq): the model then carries the front-end's
    #   long-term level equalization (runtime/leveleq.py, LevelEq) with this corpus's reference


@dataclass(frozen=True)
class TrainLoopConfig:
    iterations: int = 2400
    seed: int = 0
    eval_every: int = 200
    eval_episodes: int = 300
    checkpoint_every: int = 100
    time_limit_s: float = 1680.0     # stop early (and save) after this many seconds, 0: none


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    core: CoreConfig = field(default_factory=CoreConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    rram: RRAMTrainConfig = field(default_factory=RRAMTrainConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(config_to_dict(self), sort_keys=True).encode()
                              ).hexdigest()[:16]


#: ``--quick``: a short run on the CPU (about 2 minutes), for smoke tests and the demo.
QUICK = ["train.iterations=250", "train.eval_every=125", "train.eval_episodes=100",
         "train.time_limit_s=170"]

_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def _coerce(cls, key: str, value):
    ftype = {f.name: f for f in dataclasses.fields(cls)}[key].type
    text = str(ftype)
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if "float" in text and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _build(cls, values: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"config: unknown key(s) {', '.join(where + '.' + u for u in unknown)}")
    try:
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})
    except (TypeError, ValueError) as exc:
        raise InputError(f"config [{where}]: {exc}") from None


def config_from_dict(d: dict) -> Config:
    unknown = sorted(set(d) - set(_SECTIONS))
    if unknown:
        raise InputError(f"config: unknown section(s) {unknown}")
    classes = {f.name: f.default_factory for f in dataclasses.fields(Config)}   # type: ignore
    parts = {}
    for name, factory in classes.items():
        cls = type(factory())
        parts[name] = _build(cls, d.get(name, {}), name)
    return Config(**parts)


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text                                   # a bare string


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    d: dict = {}
    if path:
        try:
            with open(path, "rb") as fh:
                d = tomllib.load(fh)
        except FileNotFoundError:
            raise InputError("no such config file", source=os.fspath(path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"not valid TOML ({exc})", source=os.fspath(path)) from None
    for item in overrides or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise InputError(f"override {item!r}: expected section.key=value")
        d.setdefault(section, {})[name] = _parse_value(value.strip())
    return config_from_dict(d)
