"""Packages whose public names are imported on first use (PEP 562): `hf_skillit` and `hf_skillit.recipes`.

`import hf_skillit` then costs nothing, and `hf-skillit` checks a recipe's keys before torch is imported; a name
imports exactly the module that defines it, on its first lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(namespace: dict[str, Any], exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """The module-level `__getattr__` and `__dir__` of the package whose globals are `namespace`: public name ->
    the absolute name of the module defining it, imported when the name is first looked up."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value  # later lookups skip this function
            return value
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
