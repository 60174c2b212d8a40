"""tessera.models: the committed default model as package data (``default/model.tsb``, one
bundle with its calibration and level equalization, and ``config.json``), found through :func:`default_model` in an editable
checkout and in an installed wheel alike. Earlier models (``v1``, ``v2``) and the baselines stay
in the repository only."""

from __future__ import annotations

import os

__all__ = ["default_model"]


def default_model() -> str:
    """Path of the committed default model (``model.tsb``), wherever tessera is installed."""
    from importlib.resources import files

    from ..runtime.errors import InputError

    path = os.fspath(files(__name__) / "default" / "model.tsb")
    if not os.path.exists(path):
        raise InputError("the package's default model is missing (a broken install?)", source=path)
    return path
