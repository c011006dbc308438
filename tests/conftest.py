from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

# The suite's tensors are tiny: one intra-op thread avoids threads waiting on each other (measured 7x faster
# on a loaded 2-core machine), and leaves the other core to the Ray workers some tests start.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark data beside the project (``../shared/data``); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (only present beside the project's own checkout)")
    return SHARED_DATA


# fixtures that start Ray: a test that asks for one (directly or through another fixture) is marked ``ray`` by
# itself; a fixture that starts Ray without being named here fails (pytest_fixture_setup below)
RAY_FIXTURES = {"local_ray", "metrics_port", "plugin"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if RAY_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.ray)


def _ray_is_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    before = _ray_is_up()
    yield
    if not before and _ray_is_up() and fixturedef.argname not in RAY_FIXTURES:
        pytest.fail(f"fixture {fixturedef.argname!r} starts Ray: add it to RAY_FIXTURES in tests/conftest.py",
                    pytrace=False)


@pytest.fixture(autouse=True)
def ray_only_where_marked(request, monkeypatch):
    """A test that starts Ray in this process without the ``ray`` (or ``slow``) marker fails, naming itself: the
    marker stays true, so ``-m "not ray and not slow"`` is a quick loop with no Ray start in it."""
    if request.node.get_closest_marker("ray") or request.node.get_closest_marker("slow"):
        yield
        return
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts Ray: mark it @pytest.mark.ray")

    monkeypatch.setattr(ray, "init", refuse)
    yield


def start_local_ray(**options) -> None:
    """A Ray of this test process alone: ``address="local"`` never joins another user's cluster on the machine
    (a bare ``ray.init()`` would, through /tmp/ray's address file); two CPUs, no dashboard, workers' output kept
    out of the test's."""
    import ray

    ray.init(**{"address": "local", "num_cpus": 2, "include_dashboard": False, "log_to_driver": False, **options})


@pytest.fixture(scope="module")
def local_ray():
    """:func:`start_local_ray` for the tests of a module that ask for it."""
    import ray

    start_local_ray()
    yield
    ray.shutdown()


def decoded_demo(base, tmp_path_factory) -> dict:
    """``base``'s train and val splits decoded into a fresh cache and put in the object store (Ray must be up)."""
    from raykd.tune.sweep import decoded_splits

    return decoded_splits(base, str(tmp_path_factory.mktemp("cache")))


def task_of(base, splits: dict):
    """The training task of ``base`` over splits from :func:`decoded_demo`."""
    import ray

    from raykd.train.tasks import build_task

    return build_task(base.data, base.seed, {name: ray.get(ref) for name, ref in splits.items()})


def trained_teacher(base, task, tmp_path_factory, **changes):
    """A teacher :class:`~raykd.teachers.spec.TeacherSpec` trained for real from ``base`` (with ``changes``, dotted
    config paths) on ``task``."""
    from raykd.config import override
    from raykd.teachers.spec import TeacherSpec
    from raykd.train.loop import train

    path = tmp_path_factory.mktemp("teacher") / base.model.name
    train(override(base, changes), task=task, checkpoint_dir=path)
    return TeacherSpec.from_checkpoint(path)


@pytest.fixture
def hashes(monkeypatch):
    """How many sha256 digests were started (every file hash in raykd goes through ``hashlib.sha256``)."""
    calls = []
    real = hashlib.sha256

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "sha256", counting)
    return calls
