"""One sweep per name: the lock a running sweep holds in its results directory, and the refusal of a directory that
already holds another sweep.

The lock is a file, ``<storage>/<name>/.raykd-lock.json``, created with ``O_CREAT | O_EXCL`` (atomic on local
disks and on NFSv3+), naming the owner, host and PID that hold it; the holder touches it every
:data:`HEARTBEAT_S` seconds. A lock is stale, and taken over with a line saying so, when its holder is a process of
this host that no longer exists, or when it has not been touched for :data:`STALE_S` seconds (a holder on another
host that died). URI storage (``s3://``, ``gs://``) has no atomic create: it is not locked.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raykd.config import is_uri
from raykd.console import UserError, log

__all__ = ["LOCK_FILE", "HEARTBEAT_S", "STALE_S", "SweepLocked", "sweep_lock", "check_fresh_directory"]

LOCK_FILE = ".raykd-lock.json"
HEARTBEAT_S = 30.0
STALE_S = 300.0


class SweepLocked(UserError):
    """Another live sweep holds the results directory."""


def _holder() -> dict[str, Any]:
    return {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # gone, or caught between create and write: treated by age alone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _stale(path: Path, holder: dict[str, Any] | None) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if holder is not None and holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not _alive(holder["pid"])
    return age > STALE_S


def _acquire(path: Path) -> None:
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if not _stale(path, holder):
                who = "another process" if holder is None else \
                    f"{holder.get('user')}@{holder.get('host')} (PID {holder.get('pid')}, since " \
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))})"
                raise SweepLocked(f"{path.parent} is in use by another sweep of the same name: {who}; wait for it "
                                  f"or give another --name (if that process is gone, remove {path})") from None
            log.warning(f"taking over the stale lock {path} of {holder}")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(_holder(), fh)
        return
    raise SweepLocked(f"{path}: another sweep took the lock while this one removed a stale one; try again")


@contextmanager
def sweep_lock(directory: str) -> Iterator[None]:
    """Hold the lock of the results directory ``directory`` while the body runs. A directory the lock had to
    create is removed again if the body left nothing in it (a sweep refused before Tune started leaves no trace)."""
    if is_uri(directory):
        yield
        return
    root = Path(directory)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    _acquire(path)
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_S):
            try:
                os.utime(path)
            except OSError:
                return

    thread = threading.Thread(target=heartbeat, name="raykd-sweep-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        path.unlink(missing_ok=True)
        if created and not any(root.iterdir()):
            root.rmdir()


def check_fresh_directory(directories: list[str], resume: bool, force: bool) -> None:
    """A new sweep (no ``--resume``) must not write into results another sweep left: refuse non-empty
    ``directories`` unless ``force``, which moves their contents aside (to ``<dir>.replaced-<time>``: nothing is
    deleted). Called with the lock held, so a running sweep's results are never the ones moved."""
    if resume:
        return
    used = {Path(d): [p for p in Path(d).iterdir() if p.name != LOCK_FILE] for d in directories
            if not is_uri(d) and Path(d).is_dir()}
    used = {path: children for path, children in used.items() if children}
    if not used:
        return
    if not force:
        raise UserError(f"{next(iter(used))} already holds a sweep's results: --resume continues it, --force starts "
                        "afresh (the old results are moved aside, not deleted), or give another --name")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path, children in used.items():
        target = path.with_name(f"{path.name}.replaced-{stamp}")
        target.mkdir()
        for child in children:
            child.rename(target / child.name)
        log.info(f"--force: moved the previous results in {path} to {target}")
