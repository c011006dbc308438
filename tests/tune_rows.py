"""What Tune recorded of each trial, read from its files while a sweep runs or after (shared by the fault and
cluster tests)."""
from __future__ import annotations

import json
from pathlib import Path

import ray


def trial_rows(directory: Path) -> dict[str, list[dict]]:
    """Every trial's reported rows (Tune's ``result.json``), by trial directory name."""
    rows = {}
    for path in directory.glob("*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        try:
            found = [json.loads(line) for line in lines]
        except json.JSONDecodeError:  # a line being written
            continue
        if found:
            rows[path.parent.name] = found
    return rows


def live_rows(name: str) -> dict[str, list[dict]]:
    """``trial_rows`` of experiment ``name`` while Tune runs it from this process: its driver staging directory
    (the copy under the storage path is synced only now and then)."""
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    rows = {}
    for directory in session.glob(f"artifacts/*/{name}/driver_artifacts"):
        rows.update(trial_rows(directory))
    return rows
