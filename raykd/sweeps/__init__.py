"""The paper settings raykd ships as sweeps: ``python sweeps/<name>.py`` and ``raykd sweep <name>`` run them, as
does ``raykd sweep pkg.mod:MySweep`` for a user's own :class:`~raykd.tune.spec.SweepSpec` subclass."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping, Sequence

from raykd.console import UserError, run_command
from raykd.registry import import_object, is_import_path
from raykd.tune.spec import SweepSpec, run_spec

__all__ = ["SWEEPS", "run"]


class _Shipped(Mapping):
    """Sweep name -> its :class:`SweepSpec` subclass, each module imported when its sweep is asked for (a sweep's
    ``--help`` then imports its own module only, not every model the other sweeps use)."""

    _classes = {"figkd_tinyimagenet": "FiGKDTinyImageNet", "dfd_cifar": "DFDCifar", "dvmsr_div2k": "DVMSRDiv2K",
                "mtkd_div2k": "MTKDDiv2K", "vimd_cub": "ViMDCub", "figkd_cub": "FiGKDCub"}

    def __getitem__(self, name: str) -> type[SweepSpec]:
        return getattr(importlib.import_module(f"raykd.sweeps.{name}"), self._classes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)


SWEEPS: Mapping[str, type[SweepSpec]] = _Shipped()


def run(name: str, argv: Sequence[str] | None = None) -> int:
    """Run the sweep ``name`` (one of :data:`SWEEPS`, or the import path of a :class:`SweepSpec` subclass) with
    command-line flags ``argv``, behind raykd's error edge (:func:`raykd.console.run_command`); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: _run(name, argv), argv)


def find_spec(name: str) -> type[SweepSpec]:
    """The :class:`SweepSpec` subclass ``name`` names: a shipped sweep or ``"pkg.mod:MySweep"``."""
    if is_import_path(name):
        spec = import_object(name, "sweep")
        if not (isinstance(spec, type) and issubclass(spec, SweepSpec)):
            raise UserError(f"sweep {name!r} is {spec!r}, not a raykd.tune.spec.SweepSpec subclass")
        return spec
    if name not in SWEEPS:
        raise UserError(f"unknown sweep {name!r}; available: {', '.join(sorted(SWEEPS))} (or a SweepSpec subclass "
                        "named as 'package.module:Class')")
    return SWEEPS[name]


def _run(name: str, argv: Sequence[str]) -> int:
    spec = find_spec(name)
    return run_spec(spec(), argv, doc=sys.modules[spec.__module__].__doc__)
