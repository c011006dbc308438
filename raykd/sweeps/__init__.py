"""The paper settings raykd ships as sweeps: ``python sweeps/<name>.py`` and ``raykd sweep <name>`` run them, as
does ``raykd sweep pkg.mod:MySweep`` for a user's own :class:`~raykd.tune.spec.SweepSpec` subclass."""
from __future__ import annotations

import sys
from collections.abc import Sequence

from raykd.console import UserError, run_command
from raykd.registry import import_object, is_import_path
from raykd.sweeps.dfd_cifar import DFDCifar
from raykd.sweeps.dvmsr_div2k import DVMSRDiv2K
from raykd.sweeps.figkd_tinyimagenet import FiGKDTinyImageNet
from raykd.sweeps.mtkd_div2k import MTKDDiv2K
from raykd.sweeps.vimd_cub import ViMDCub
from raykd.tune.spec import SweepSpec, run_spec

__all__ = ["SWEEPS", "run"]

SWEEPS: dict[str, type[SweepSpec]] = {spec.name: spec for spec in (
    FiGKDTinyImageNet, DFDCifar, DVMSRDiv2K, MTKDDiv2K, ViMDCub)}


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
