"""Lazy re-exports for a package's ``__init__`` (PEP 562 module ``__getattr__``).

A package re-exports names from its heavy modules (SHAP, Fairlearn, scipy, pandas) without
importing them until first use, so importing one light module of the package stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``package.<exports[name]>`` on first use of ``name``."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
