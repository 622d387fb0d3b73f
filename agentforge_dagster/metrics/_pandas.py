"""pandas, imported when first used: a run worker or a CLI command that computes no figures does not
pay the ~0.5 s of importing it (type checkers see the real module)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


pd: Any = _LazyModule("pandas")
