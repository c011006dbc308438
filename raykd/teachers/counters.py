"""A teacher service's counters (per teacher: rows computed, tables built and loaded, bytes of the last table),
kept in the cluster's key-value store as they change, so that an instance Ray restarts after a crash goes on
from what the dead one had counted: rows a dead instance computed were computed."""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterable

import ray

__all__ = ["Counters"]

FIELDS = ("samples_computed", "tables_built", "tables_loaded", "table_bytes")


class Counters:
    def __init__(self, teachers: Iterable[str], name: str) -> None:
        self.key = f"raykd-teacher-counters-{name}".encode()
        self.values = self._before_restart() or {teacher: dict.fromkeys(FIELDS, 0) for teacher in teachers}

    def _before_restart(self) -> dict[str, dict[str, int]] | None:
        """The counters of the instance Ray restarted this one from; None on a first start."""
        from ray.experimental.internal_kv import _internal_kv_get

        with warnings.catch_warnings():  # Ray 2.60's property reads its own deprecated actor_id
            warnings.simplefilter("ignore", DeprecationWarning)
            if not ray.get_runtime_context().was_current_actor_reconstructed:
                return None
        saved = _internal_kv_get(self.key)
        return json.loads(saved) if saved else None

    def add(self, teacher: str, **add: int) -> None:
        for name, value in add.items():
            self.values[teacher][name] += value
        self._save()

    def set(self, teacher: str, **values: int) -> None:
        self.values[teacher].update(values)
        self._save()

    def _save(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        _internal_kv_put(self.key, json.dumps(self.values).encode(), overwrite=True)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {name: dict(values) for name, values in self.values.items()}

    def delete(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_del

        _internal_kv_del(self.key)
