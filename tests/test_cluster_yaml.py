"""cluster.yaml: valid for Ray's own launcher schema (offline, no cloud calls) and has the properties we rely on."""
from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from ray.autoscaler._private.util import fillout_defaults, merge_setup_commands, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def config(raw) -> dict:
    """The config as `ray up` sees it: defaults filled in, validated, setup commands merged per node kind."""
    filled = fillout_defaults(copy.deepcopy(raw))
    validate_config(filled)
    return merge_setup_commands(filled)


def _ray_start_flags(commands: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(flags, env prefix) of the single `ray start` invocation among ``commands``."""
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 1, commands
    tokens = shlex.split(starts[0].split(";")[-1])
    env = dict(t.split("=", 1) for t in tokens[: tokens.index("ray")])
    flags = {}
    for token in tokens[tokens.index("start") + 1 :]:
        name, _, value = token.partition("=")
        flags[name] = value
    return flags, env


def test_validates_against_rays_schema_which_is_strict(raw, config):
    assert config["provider"]["type"] == "aws"
    broken = fillout_defaults(copy.deepcopy(raw))
    broken["available_node_types"]["gpu_1x"]["resources"] = {"GPU": "one"}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def test_cpu_head_and_gpu_worker_types_that_scale_from_zero(config):
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["node_config"]["InstanceType"].startswith("m5.")
    workers = {name: t for name, t in node_types.items() if name != config["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        assert node_type["resources"]["GPU"] >= 1, name
        assert node_type["min_workers"] == 0, name
        assert 1 <= node_type["max_workers"] <= config["max_workers"], name
        assert re.match(r"(g|p)\d", node_type["node_config"]["InstanceType"]), name


def test_every_node_type_names_its_ami(config):
    # Without an ImageId Ray falls back to an Ubuntu 18.04 DLAMI whose NVIDIA driver current torch rejects.
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["ImageId"].startswith("ami-"), name


def test_project_is_mounted_and_gpu_workers_install_the_cuda_extra(config):
    project_dirs = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert len(project_dirs) == 1
    remote = project_dirs[0].replace("~", "$HOME", 1)
    commands = config["worker_setup_commands"]
    (extra,) = [i for i, c in enumerate(commands) if "pip install" in c and f"{remote}[cuda]" in shlex.split(c)]
    # the extra's kernels come from the wheelhouse first, so the editable install of the extra builds nothing
    (wheels,) = [i for i, c in enumerate(commands) if "cluster/cuda_extras.sh" in c]
    assert f"{remote}/cluster/cuda_extras.sh" in commands[wheels] and wheels < extra
    assert any(remote in shlex.split(c) for c in config["head_setup_commands"] if "pip install" in c)


def test_dashboard_on_loopback_metrics_exported_and_token_auth_on(raw, config):
    head_flags, head_env = _ray_start_flags(config["head_start_ray_commands"])
    worker_flags, worker_env = _ray_start_flags(config["worker_start_ray_commands"])
    assert "--head" in head_flags
    assert head_flags["--dashboard-host"] == "127.0.0.1"
    assert head_flags["--metrics-export-port"] and worker_flags["--metrics-export-port"]
    assert head_env["RAY_AUTH_MODE"] == "token" and worker_env["RAY_AUTH_MODE"] == "token"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    text = CLUSTER_YAML.read_text()
    assert "0.0.0.0" not in text
    assert not re.search(r"RAY_AUTH_MODE\s*=\s*disabled", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))


def test_every_node_installs_the_one_ray_version_the_driver_runs(config):
    # a node with another Ray than the driver's fails to join (or, across a token-auth change, to authenticate)
    import tomllib

    import ray

    pyproject = tomllib.loads((CLUSTER_YAML.parent / "pyproject.toml").read_text())
    (pin,) = [req for req in pyproject["project"]["dependencies"] if re.match(r"ray(\[|\b)", req)]
    assert pin.endswith(f"=={ray.__version__}"), pin
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    remote = next(r for r, local in config["file_mounts"].items() if local == ".").replace("~", "$HOME", 1)
    assert any(remote in shlex.split(c) for c in installs), installs  # the project, and so its pin
    every = [*config["setup_commands"], *config["head_setup_commands"], *config["worker_setup_commands"]]
    own = [token for c in every if "pip install" in c for token in shlex.split(c)
           if re.fullmatch(r"ray(\[[^\]]*\])?([<>=!~].*)?", token)]
    assert all(token.endswith(f"=={ray.__version__}") for token in own), own  # none installs another Ray


FAKE_PIP = r"""
import pathlib, re, sys, time
args = sys.argv[1:]
log = pathlib.Path(sys.argv[0]).with_suffix(".log")
names = [re.split(r"[<>=!~ ]", a)[0].replace("-", "_") for a in args if not a.startswith("-") and "/" not in a]
names = names[1:]  # the subcommand
with log.open("a") as f:
    f.write(args[0] + "\n")
if args[0] == "install":
    found = pathlib.Path(args[args.index("--find-links") + 1])
    sys.exit(0 if all(list(found.glob(n + "-*.whl")) for n in names) else 1)
if args[0] == "wheel":  # as slow as a build, against the nodes that start with it
    time.sleep(3)
    out = pathlib.Path(args[args.index("--wheel-dir") + 1])
    for n in names:
        (out / f"{n}-1.0-py3-none-any.whl").write_bytes(b"")
"""


def _cuda_extras(tmp_path, wheelhouse, node: str):
    """cluster/cuda_extras.sh for this project on one node, with a pip that records its subcommands (``install``
    succeeds only when the wheelhouse has every requirement's wheel; ``wheel`` makes them)."""
    import subprocess
    import sys

    pip = tmp_path / f"pip-{node}.py"
    pip.write_text(FAKE_PIP)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": sys.executable, "PIP": f"{sys.executable} {pip}"}
    proc = subprocess.Popen(["bash", str(CLUSTER_YAML.parent / "cluster" / "cuda_extras.sh"),
                             str(CLUSTER_YAML.parent), str(wheelhouse)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, pip.with_suffix(".log")


def test_gpu_nodes_build_the_cuda_wheels_once_and_install_them_from_the_wheelhouse(tmp_path) -> None:
    wheelhouse = tmp_path / "wheels"
    started = [_cuda_extras(tmp_path, wheelhouse, f"node{i}") for i in range(3)]  # three nodes at once
    for proc, _ in started:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    calls = [log.read_text().split() for _, log in started]
    assert sum(c.count("wheel") for c in calls) == 1, calls  # one build for the cluster, under the lock
    (build,) = [d for d in wheelhouse.iterdir() if d.is_dir()]
    assert build.name.startswith("torch") and "-py3" in build.name  # per torch build and Python
    assert sorted(p.name.split("-")[0] for p in build.glob("*.whl")) == ["causal_conv1d", "mamba_ssm"]  # pyproject's
    later, log = _cuda_extras(tmp_path, wheelhouse, "later")  # a node added later: installs, builds nothing
    out, _ = later.communicate(timeout=120)
    assert later.returncode == 0 and "from " + str(build) in out and log.read_text().split() == ["install"], out
