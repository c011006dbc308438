"""What raykd says to a person, and the one edge where a failure becomes one line and an exit status.

Every command (``raykd ...``, ``python sweeps/<name>.py``) runs its body through :func:`run_command`:

* a user's mistake (a bad value or name, a missing or damaged file, a plugin that cannot be imported:
  :data:`USER_MISTAKES`) prints ``raykd: error: <one line>`` and exits 2;
* a full disk prints the path that could not be written and exits 1 (nothing is left half-written: every
  store and checkpoint writes to a temporary name and renames);
* Ctrl-C (or a sweep stage that did not finish, :class:`Interrupted`) says that ``--resume`` continues the work and
  exits 130, the shell's status for SIGINT;
* a sweep stage whose every trial failed (:class:`StageFailed`) prints the first error and where the others are,
  and exits 1, as does a Ray that did not start (:class:`RayUnavailable`);
* ``--debug`` (or ``RAYKD_DEBUG=1``) shows the full traceback instead.

It also reads the flags every command shares before the command's own parser does: ``--trust-plugins`` and plugin
import paths named on the command line (:func:`raykd.registry.trust_plugins`), ``--quiet``/``--verbose`` (the level
of the ``raykd`` logger, :data:`log`).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from raykd.registry import trust_plugins

__all__ = ["log", "UserError", "Interrupted", "StageFailed", "RayUnavailable", "key_values", "USER_MISTAKES",
           "run_command", "add_common_flags", "one_line", "json_object"]

log = logging.getLogger("raykd")

INTERRUPTED = 130


class UserError(ValueError):
    """A mistake in what the user gave (a value, a name, a file): said in one line, exit status 2."""


class Interrupted(Exception):
    """Work stopped before it was complete (Ctrl-C, a sweep stage with unfinished trials); ``--resume`` goes on."""


class StageFailed(Exception):
    """Every trial of a sweep stage failed: nothing to rank; the message names the first error and the results."""


class RayUnavailable(Exception):
    """Ray did not start (or the cluster named did not answer); the message says where its logs are."""


USER_MISTAKES: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, NotADirectoryError,
                                                  IsADirectoryError, PermissionError, ImportError)


def add_common_flags(parser) -> None:
    """The flags every command takes (read again by :func:`run_command`, before parsing, so that they also govern
    what happens while the command's own arguments are checked)."""
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--verbose", action="store_true", help="more detail (and Ray's own output)")
    parser.add_argument("--trust-plugins", action="store_true",
                        help="let checkpoints' meta.json name plugin models by import path (runs their code)")


def json_object(flag: str, text: str) -> dict[str, Any]:
    """The JSON object a flag's value holds, or a :class:`UserError` naming the flag and what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{flag} {text!r} is not valid JSON ({err}); give an object, e.g. '{{\"img_size\": 48}}'"
                        ) from None
    if not isinstance(value, dict):
        raise UserError(f"{flag} {text!r} must be a JSON object ({{...}}), not {type(value).__name__}")
    return value


def key_values(flag: str, items: Sequence[str]) -> dict[str, Any]:
    """``["T=4", "wavelet=db2"]`` -> ``{"T": 4, "wavelet": "db2"}``: the ``KEY=VALUE`` items of a repeated flag,
    values parsed as JSON where they are JSON (numbers, booleans, lists, objects), else kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a KeyError's message without its quotes)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__


def _configure(argv: Sequence[str]) -> bool:
    """Apply the common flags in ``argv``; return whether tracebacks are wanted."""
    tokens = [part for token in argv for part in token.split("=", 1)]
    trust_plugins(tokens, everything="--trust-plugins" in argv)
    level = logging.WARNING if "--quiet" in argv else logging.DEBUG if "--verbose" in argv else logging.INFO
    if not log.handlers:
        log.addHandler(_Console())
        log.propagate = False
    log.setLevel(level)
    return "--debug" in argv or os.environ.get("RAYKD_DEBUG", "") not in ("", "0")


class _Console(logging.Handler):
    """raykd's lines: progress on stdout, warnings on stderr (the streams of the moment, not of set-up time)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        print(record.getMessage(), file=stream, flush=True)


def run_command(body: Callable[[], int], argv: Sequence[str] | None = None, prog: str = "raykd") -> int:
    """Run ``body`` (a command, returning its exit status) behind the error edge; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _configure(argv)
    try:
        return body()
    except (KeyboardInterrupt, Interrupted) as err:
        reason = one_line(err) if isinstance(err, Interrupted) else "interrupted"
        _say(f"{prog}: {reason}; what finished is kept: the same command with --resume continues it", debug)
        return INTERRUPTED
    except (StageFailed, RayUnavailable) as err:
        _say(f"{prog}: error: {one_line(err)}", debug)
        return 1
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT) and not isinstance(err, USER_MISTAKES):
            raise
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            where = err.filename or "the disk"
            _say(f"{prog}: error: no space left writing {where}; free space there (or point --storage/--cache-dir "
                 "elsewhere) and rerun with --resume", debug)
            return 1
        _say(f"{prog}: error: {one_line(err)}", debug)
        return 2
    except USER_MISTAKES as err:
        _say(f"{prog}: error: {one_line(err)}", debug)
        return 2


def _say(line: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(line, file=sys.stderr, flush=True)
