"""Strategy registry: ``STRATEGIES[name]`` is what ``spiking run --method NAME`` looks up.

Optional strategies living next to these files (``hlop.py``, ``sparsey.py``) register themselves
by defining a ``Strategy`` subclass; they are imported here when present. Others can call
``register(cls)``.
"""
from __future__ import annotations

import importlib

from ..strategy import Strategy
from .ewc import EWC
from .finetune import Finetune
from .gpm import GPM
from .joint import Joint
from .replay import Replay

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Finetune, EWC, Replay, GPM, Joint)
}
STRATEGIES["multitask"] = Joint


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a Strategy subclass under ``cls.name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"cls must be a Strategy subclass, got {cls!r}")
    STRATEGIES[cls.name] = cls
    return cls


for _name in ("hlop", "sparsey"):
    try:
        _mod = importlib.import_module(f".{_name}", __name__)
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_name}":
            raise
        continue
    for _obj in list(vars(_mod).values()):
        if isinstance(_obj, type) and issubclass(_obj, Strategy) and _obj.__module__ == _mod.__name__:
            register(_obj)

__all__ = ["STRATEGIES", "register", "Strategy", "Finetune", "EWC", "Replay", "GPM", "Joint"]
