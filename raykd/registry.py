"""One registry class for every kind of raykd component (BasicSR's ``Registry``, with scopes and plugins).

``MODELS``, ``METHODS``, ``DATASETS``, ``TASKS`` and ``KEYMAPS`` (official checkpoint layouts,
:mod:`raykd.models.weights`) are instances. A component registers itself where it is
defined (``@MODELS.register()``); a name is looked up within an optional scope (a method or dataset belongs to
a task: ``"none"`` is cross-entropy for ``"cls"`` and L1 for ``"sr"``).

A user's own component needs no change to raykd: name it by import path, ``"mypkg.nets:resnet20"``. The module
is imported on first use, in whatever process asks (the driver, a trial, a teacher actor), so it must be
importable there: a module beside the driver script or in its working directory is (Ray puts both on every
worker's ``sys.path``; on a cluster submit with ``ray job submit --working-dir .``).

Importing runs code, so an import path is honoured only where the user wrote it: in their code (a
:class:`~raykd.config.ModelConfig`), on the command line, or under ``--trust-plugins``. One read from a data file
(a checkpoint's ``meta.json``) must be :func:`trusted` first: a downloaded teacher cannot run code by naming
``"subprocess:run"`` as its model.
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["Registry", "MODELS", "METHODS", "DATASETS", "TASKS", "KEYMAPS", "is_import_path", "import_object",
           "UntrustedPlugin", "trust_plugins", "trusted"]


def is_import_path(name: str) -> bool:
    """Whether ``name`` is a plugin import path ``"package.module:attribute"`` (dotted identifiers on both sides)
    rather than a registered name."""
    module, sep, attr = name.partition(":")
    return bool(sep) and all(part.isidentifier() for side in (module, attr) for part in side.split("."))


class UntrustedPlugin(ValueError):
    """A data file names a plugin import path the user has not trusted (importing it would run its code)."""


_TRUSTED: set[str] = set()
_TRUST_ALL = False


def trust_plugins(names: Iterable[str] = (), *, everything: bool = False) -> None:
    """Let this process import the plugin paths ``names`` (the values that are import paths; others are ignored)
    when a data file names them, or every plugin path when ``everything`` (``--trust-plugins``)."""
    global _TRUST_ALL
    _TRUSTED.update(name for name in names if isinstance(name, str) and is_import_path(name))
    _TRUST_ALL = _TRUST_ALL or everything


def trusted(name: str) -> bool:
    """Whether the import path ``name`` may be imported when a data file names it."""
    return _TRUST_ALL or name in _TRUSTED


class Registry:
    """Named components of one kind, optionally grouped by scope.

    ``register`` is a decorator; ``get`` resolves a registered name or an import path; ``names`` lists what is
    registered. Registering one name twice in one scope with a different object is an error (two components
    would silently shadow each other).
    """

    def __init__(self, kind: str, scopes: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.scopes = scopes
        self._entries: dict[tuple[str | None, str], Any] = {}

    def _check_scope(self, scope: str | None) -> None:
        if self.scopes and scope not in self.scopes:
            raise ValueError(f"{self.kind} scope {scope!r} is not one of {list(self.scopes)}")
        if not self.scopes and scope is not None:
            raise ValueError(f"{self.kind}s have no scopes; got scope {scope!r}")

    def register(self, obj: Any = None, *, name: str | None = None, scope: str | None = None):
        """Register ``obj`` (a function or class) under ``name`` (default: its ``name`` attribute, else its
        ``__name__``). Usable as ``@REG.register()``, ``@REG.register(name=..., scope=...)`` or ``REG.register(f)``."""

        def add(item: Any) -> Any:
            key_name = name if name is not None else getattr(item, "name", None) or item.__name__
            if not isinstance(key_name, str) or not key_name or is_import_path(key_name):
                raise ValueError(f"{self.kind} name {key_name!r} must be a non-empty string without ':'")
            item_scope = scope if scope is not None else getattr(item, "task", None) if self.scopes else None
            self._check_scope(item_scope)
            key = (item_scope, key_name)
            if key in self._entries and self._entries[key] is not item:
                where = f" for {item_scope}" if item_scope else ""
                raise ValueError(f"{self.kind} {key_name!r}{where} is registered twice: "
                                 f"{_describe(self._entries[key])} and {_describe(item)}")
            self._entries[key] = item
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str, scope: str | None = None) -> Any:
        """The component registered as ``name`` (in ``scope``), or the object an import path names."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if is_import_path(name):
            return import_object(name, self.kind)
        self._check_scope(scope)
        try:
            return self._entries[scope, name]
        except KeyError:
            where = f" {scope}" if scope else ""
            raise KeyError(f"unknown{where} {self.kind} {name!r}; registered: {self.names(scope)} "
                           "(or name your own as 'package.module:attribute')") from None

    def has(self, name: str, scope: str | None = None) -> bool:
        return (scope, name) in self._entries

    def names(self, scope: str | None = None) -> list[str]:
        """Registered names in ``scope`` (all scopes' names, once each, when the registry has scopes and none is
        given), sorted."""
        if self.scopes and scope is None:
            return sorted({key_name for _, key_name in self._entries})
        return sorted(key_name for key_scope, key_name in self._entries if key_scope == scope)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _describe(item: Any) -> str:
    return f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', repr(item))}"


def import_object(path: str, kind: str) -> Any:
    """The object the import path ``"package.module:attribute"`` names (``kind`` says what it is, in errors)."""
    module_name, _, attr = path.partition(":")
    # the working directory, last: Ray puts it on every worker's path, so a driver started as
    # `python sweeps/x.py` (whose own path starts at sweeps/) finds the same modules its workers do
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"{kind} {path!r}: cannot import module {module_name!r} ({err}); it must be importable in "
                          "every Ray process (beside the driver script, in its working directory, or installed)"
                          ) from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportError(f"{kind} {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


MODELS = Registry("model")
METHODS = Registry("method", scopes=("cls", "sr"))
DATASETS = Registry("dataset", scopes=("cls", "sr"))
TASKS = Registry("task")
KEYMAPS = Registry("key map")
