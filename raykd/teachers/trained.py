"""The trained-teacher store: teachers raykd made, kept once and reused by every sweep.

``<cache_dir>/teachers/<label>-<key>/`` is a raykd checkpoint directory (:mod:`raykd.models.checkpoint`), keyed by
a sha256 of everything that made it: a trained teacher's training config and data, MTKD's aggregated teacher's
stage-1 inputs, a released weights file's content. A directory appears only complete (written beside it, then
renamed into place) and is verified against its manifest whenever it is reused; a damaged one is reported, moved
aside (``.corrupt``) and made again. Work in progress lives in ``<dir>.partial`` (per-epoch checkpoints of a
teacher being trained), so a killed driver resumes training where it stopped.
"""
from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raykd.config import CacheLayout
from raykd.data.store import content_key
from raykd.models.checkpoint import CheckpointError
from raykd.teachers.spec import TeacherSpec

__all__ = ["TrainedTeachers", "TrainedTeacherWarning"]


class TrainedTeacherWarning(RuntimeWarning):
    """A stored teacher failed verification and will be made again."""


class TrainedTeachers:
    """Content-keyed teacher checkpoints under ``<cache_dir>/teachers`` (a local or NFS path)."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.root = CacheLayout.of(cache_dir).teachers

    def path(self, label: str, document: Mapping[str, Any]) -> Path:
        """Where the teacher ``document`` describes is kept: ``<root>/<label>-<first 16 hex digits of its key>``."""
        return self.root / f"{label}-{content_key(dict(document))[:16]}"

    def find(self, path: Path, name: str | None = None) -> TeacherSpec | None:
        """The verified teacher at ``path``, or ``None`` when absent or damaged (then reported and moved aside)."""
        if not path.exists():
            return None
        try:
            return TeacherSpec.from_checkpoint(path, name)  # verified against its manifest
        except CheckpointError as err:
            aside = path.with_name(path.name + ".corrupt")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            warnings.warn(f"stored teacher {path} failed verification ({err}); moved to {aside}; it will be made "
                          "again", TrainedTeacherWarning, stacklevel=2)
            return None

    @staticmethod
    def partial(path: Path) -> Path:
        """Where the teacher at ``path`` is made (checkpoints of an unfinished training)."""
        return path.with_name(path.name + ".partial")

    def commit(self, files: Mapping[str, bytes], path: Path, name: str | None = None) -> TeacherSpec:
        """Write a finished checkpoint's ``files`` to ``path`` (complete or not at all), drop its work in progress,
        and return the verified teacher. A concurrent run that committed the same teacher first wins."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for file, content in files.items():
            (tmp / file).write_bytes(content)
        try:
            os.replace(tmp, path)
        except OSError:  # another run finished the same teacher first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        partial = self.partial(path)
        # the work in progress, and what a process killed mid-write left: a checkpoint's temporary sibling
        # (".<partial>.*", raykd.train.checkpoint) or an unfinished commit (".<dir>.<pid>.tmp")
        leftovers = [partial, partial.with_name(partial.name + ".old"), *path.parent.glob(f".{partial.name}.*"),
                     *path.parent.glob(f".{path.name}.*.tmp")]
        for leftover in leftovers:
            shutil.rmtree(leftover, ignore_errors=True)
        spec = self.find(path, name)
        if spec is None:
            raise CheckpointError(f"teacher written to {path} does not verify; the disk may be failing")
        return spec
