"""For the demo test only (tests/test_demo.py puts this folder on PYTHONPATH): key files the
demo's ``evault`` processes create get the lowest scrypt cost the reader accepts, as the
in-process tests' do (tests/conftest.py). The demo makes and unlocks key files about a
hundred times; at the default cost that was half a minute of the suite, and the key file
itself is tested elsewhere at every cost. Nothing here is imported by evault or the demo
when run by hand."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

LOWEST = 10


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        module.DEFAULT_WORK_FACTOR = LOWEST  # type: ignore[attr-defined]


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "vault.crypto.secretbox":
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)  # type: ignore[attr-defined]
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


sys.meta_path.insert(0, _Finder())
