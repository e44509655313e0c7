"""Libraries' run-time type checks, switched off as an optimised interpreter switches them off.

Feast decorates its classes and functions with typeguard's `@typechecked`. Typeguard
instruments each decorated function while the module imports: it reads the whole module's
source, parses it, rewrites the function and compiles the module again, once for every
function. Importing Feast took 4.8-7.2 s on a 2-core machine, 1.2-1.5 s without that, and
every process that uses the feature store pays it: each command, the service, each flow,
each test process. The import holds the interpreter lock, so it also slows whatever runs
beside it (the monitor reads its raw tables meanwhile).

The checks catch a wrong argument type in a call into the library; they change nothing in
a correct call. Typeguard itself leaves every target unchanged when Python runs optimised
(`python -O`); `library_typechecks_off` gives that behaviour without `-O`, which would
also drop every `assert` in every library.

It works when typeguard is imported, through an import hook: the standard library has no
post-import hook, and wrapt's costs about 60 ms of import, which a command that never loads
Feast would pay for nothing. `@typechecked` then becomes the identity for modules imported
afterwards. A module that imported the decorator earlier keeps it. Every package of this
project that imports Feast calls it first, in its `__init__`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType

MODULE = "typeguard"


def unchecked(target=None, **_options):
    """`typeguard.typechecked` as under `python -O`: the target itself (a decorator that
    returns it, when called with options only)."""
    if target is None:
        return lambda decorated: decorated
    return target


def _switch_off(module: ModuleType) -> None:
    module.typechecked = unchecked


class _Loader(importlib.abc.Loader):
    """Typeguard's own loader, which then switches its decorator off."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _switch_off(module)

    def __getattr__(self, name: str):  # get_source, get_filename, … for inspect and pkgutil
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds typeguard as the other finders would, with `_Loader` around its loader."""

    def __init__(self) -> None:
        self._finding = threading.local()

    def find_spec(self, name, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if name != MODULE or getattr(self._finding, "now", False):
            return None
        self._finding.now = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding.now = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


_lock = threading.Lock()


def library_typechecks_off() -> None:
    """Make typeguard's `@typechecked` leave what it decorates unchanged, from now on (see
    the module's docstring). Calling it again does nothing more."""
    with _lock:
        loaded = sys.modules.get(MODULE)
        if loaded is not None:
            _switch_off(loaded)
        elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
