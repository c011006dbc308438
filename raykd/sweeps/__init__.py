"""The paper settings raykd ships as sweeps: ``python sweeps/<name>.py`` and ``raykd sweep <name>`` run them."""
from __future__ import annotations

import sys
from collections.abc import Sequence

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
    """Run the sweep ``name`` (one of :data:`SWEEPS`) with command-line flags ``argv``."""
    if name not in SWEEPS:
        raise SystemExit(f"unknown sweep {name!r}; available: {', '.join(sorted(SWEEPS))}")
    spec = SWEEPS[name]
    return run_spec(spec(), argv, doc=sys.modules[spec.__module__].__doc__)
