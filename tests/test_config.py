"""raykd.config: JSON round trips, dotted overrides, and a ConfigError naming the field for every bad value."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
from ray.train import ScalingConfig
from ray.tune import FailureConfig

from raykd.config import (
    CacheLayout,
    ConfigError,
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    SweepConfig,
    TeacherConfig,
    TeacherServiceConfig,
    TrainConfig,
    from_json,
    override,
    to_json,
)


def _full_train() -> TrainConfig:
    """A TrainConfig with every nested config present and (nearly) every field away from its default."""
    return TrainConfig(
        model=ModelConfig("resnet32x4", {"num_classes": 200, "depths": [2, 2], "extra": {"a": None}},
                          init_from="/weights/x.pth", init_keymap="basicsr_msrresnet"),
        data=DataConfig(task="sr", dataset="div2k", root="/data/div2k", val_dataset="paired", val_root="/data/Set5",
                        image_size=64, crop_padding=2, crop="resized", crop_scale=(0.25, 0.9), crop_ratio=(0.5, 2.0),
                        lr_factor=2, lr_mode="down", scale=3, patch_size=32,
                        patches_per_image=4, rot90=False, tile=64, tile_overlap=8, y_channel="float", flip=False,
                        reuse_views=3),
        optim=OptimConfig(name="adamw", lr=2e-4, momentum=0.5, betas=(0.8, 0.95), weight_decay=0.0, no_decay=False,
                          schedule="multistep", milestones=(3, 5), gamma=0.5, epochs=7, batch_size=16,
                          steps_per_epoch=100),
        method=MethodConfig("mtkd", {"alpha": 0.2, "levels": 2, "wavelet": "db2"}, student_input="lr"),
        teacher=TeacherConfig("/runs/teacher", ModelConfig("rcan", {"scale": 3})),
        runtime=RuntimeConfig(device="cuda:1", amp=False, channels_last=False, check_data=False, progress=True),
        seed=42,
    )


def _full_sweep() -> SweepConfig:
    return SweepConfig(
        name="figkd", methods=("kd", "figkd"), num_samples=8, metric="val/acc", mode="min",
        scaling=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 2}),
        failure=FailureConfig(max_failures=5),
        teacher_service=TeacherServiceConfig(replicas=2, num_cpus=2.0, num_gpus=0.5, batch_size=64, ahead=2,
                                      keep_epochs=3, mode="stored", live_threshold_bytes=2**20, top_k=10,
                                      precision="float32"),
        max_concurrent_trials=4, grace_period=2, storage="s3://bucket/runs", cache_dir="/cache", resume=True,
        seed=3, seeds=0, log=("mlflow",), verbose=2,
    )


def _every_field_differs(config, default) -> list[str]:
    """Fields left at their defaults (recursing into nested configs)."""
    same = []
    for f in dataclasses.fields(config):
        mine, theirs = getattr(config, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(mine) and type(mine) is type(theirs) and f.name not in ("scaling", "failure"):
            same += [f"{f.name}.{n}" for n in _every_field_differs(mine, theirs)]
        elif mine == theirs:
            same.append(f.name)
    return same


def test_a_fully_nested_train_config_round_trips_through_json_text():
    cfg = _full_train()
    assert _every_field_differs(cfg, TrainConfig()) == []
    text = json.dumps(to_json(cfg))
    back = from_json(TrainConfig, json.loads(text))
    assert back == cfg
    assert isinstance(back.teacher.model, ModelConfig) and back.optim.betas == (0.8, 0.95)
    assert from_json(TrainConfig, {}) == TrainConfig()  # missing keys take their defaults
    assert from_json(TrainConfig, to_json(TrainConfig())) == TrainConfig()


def test_a_sweep_config_round_trips_through_json_text():
    sweep = _full_sweep()
    assert _every_field_differs(sweep, SweepConfig()) == []
    back = from_json(SweepConfig, json.loads(json.dumps(to_json(sweep))))
    assert back == sweep
    assert isinstance(back.scaling, ScalingConfig) and back.workers_per_trial == 2
    assert isinstance(back.failure, FailureConfig) and back.failure.max_failures == 5
    assert isinstance(back.teacher_service, TeacherServiceConfig) and back.methods == ("kd", "figkd")
    assert from_json(SweepConfig, json.loads(json.dumps(to_json(SweepConfig())))) == SweepConfig()
    assert sweep.directory == "s3://bucket/runs/figkd"


@pytest.mark.parametrize(
    ("kind", "values", "path"),
    [
        (TrainConfig, {"sed": 1}, "sed"),
        (TrainConfig, {"optim": {"lrr": 0.1}}, "optim.lrr"),
        (TrainConfig, {"teacher": {"checkpoint": "x", "model": {"nme": "rcan"}}}, "teacher.model.nme"),
        (SweepConfig, {"teacher_service": {"replica": 2}}, "teacher_service.replica"),
    ],
)
def test_from_json_names_unknown_keys_by_their_dotted_path(kind, values, path):
    with pytest.raises(ConfigError, match=rf"\['{path}'\]"):
        from_json(kind, values)


def test_from_json_checks_values_and_shapes():
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        from_json(TrainConfig, {"optim": {"lr": -1}})
    with pytest.raises(ConfigError, match=r"train\.optim = 5"):
        from_json(TrainConfig, {"optim": 5})
    with pytest.raises(ConfigError, match="expected a JSON object"):
        from_json(TrainConfig, [1, 2])


def test_override_with_dotted_paths():
    cfg = TrainConfig()
    changed = override(cfg, {"optim.lr": 0.1, "method.name": "kd", "method.params": {"T": 2.0}, "seed": 3,
                             "data.image_size": 64, "data.crop_padding": 8})
    assert (changed.optim.lr, changed.method.name, changed.method.params, changed.seed) == (0.1, "kd", {"T": 2.0}, 3)
    assert (changed.data.image_size, changed.data.crop_padding) == (64, 8)
    assert changed.optim.epochs == cfg.optim.epochs and changed.model == cfg.model  # the rest is kept
    assert cfg == TrainConfig()  # the original is untouched (frozen)
    # a whole sub-config, then a field of it, in one call
    with_teacher = override(cfg, {"teacher": TeacherConfig("/t"), "teacher.model": ModelConfig("resnet32x4")})
    assert with_teacher.teacher == TeacherConfig("/t", ModelConfig("resnet32x4"))
    deep = override(with_teacher, {"teacher.model.kwargs": {"num_classes": 10}})
    assert deep.teacher.model.kwargs == {"num_classes": 10} and deep.teacher.checkpoint == "/t"
    sweep = override(SweepConfig(), {"teacher_service.top_k": 5, "num_samples": 2})
    assert sweep.teacher_service.top_k == 5 and sweep.num_samples == 2


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"optim.lrr": 0.1}, r"OptimConfig has no field 'lrr' \(in 'optim\.lrr'\)"),
        ({"optimiser.lr": 0.1}, r"TrainConfig has no field 'optimiser' \(in 'optimiser\.lr'\)"),
        ({"teacher.model.nme": "x"}, r"'teacher\.model\.nme'"),
        ({"teacher.checkpoint": "x"}, r"\['teacher\.checkpoint'\].*teacher is None"),
        ({"optim.lr": -0.1}, r"optim\.lr = -0\.1"),
        ({"data.tile": 8, "data.tile_overlap": 8}, r"data\.tile_overlap = 8"),
    ],
)
def test_override_errors_name_the_dotted_path(changes, match):
    base = override(TrainConfig(), {"teacher": TeacherConfig("/t", ModelConfig())}) if "teacher.model.nme" in changes \
        else TrainConfig()
    with pytest.raises(ConfigError, match=match):
        override(base, changes)


# ----------------------------------------------------------------------- every field of every class


BAD = {
    ModelConfig: [
        ("name", ""), ("name", "   "), ("name", 3), ("kwargs", [("a", 1)]), ("kwargs", {1: 2}), ("init_from", ""),
        ("init_from", 5), ("init_keymap", 7), ("init_keymap", "hustvl_vim"),  # a key map without init_from
    ],
    DataConfig: [
        ("task", "seg"), ("dataset", ""), ("root", ""), ("root", 3), ("val_dataset", ""), ("val_root", 1),
        ("image_size", 0), ("image_size", 32.0), ("image_size", True), ("crop_padding", -1), ("crop", "random"),
        ("crop_scale", (0.0, 1.0)), ("crop_scale", (0.5, 1.5)), ("crop_scale", (0.5,)), ("crop_ratio", (2.0, 1.0)),
        ("crop_ratio", "3/4"), ("lr_factor", 0),
        ("lr_mode", "up"), ("scale", 0), ("patch_size", 0), ("patches_per_image", 0), ("rot90", "yes"),
        ("tile", -1), ("tile_overlap", -1), ("y_channel", "y"), ("flip", "no"), ("reuse_views", 0),
        ("reuse_views", 1.5),
    ],
    OptimConfig: [
        ("name", "lamb"), ("lr", 0.0), ("lr", -1.0), ("lr", math.nan), ("lr", "0.1"), ("momentum", 1.5),
        ("momentum", math.inf), ("betas", (0.9,)), ("betas", (0.9, 1.0)), ("betas", (math.nan, 0.9)),
        ("betas", "ab"), ("weight_decay", -1e-4), ("no_decay", "no"), ("schedule", "linear"), ("epochs", 0),
        ("epochs", 2.5), ("batch_size", 0), ("steps_per_epoch", 0), ("milestones", (5, 3)), ("milestones", (10,)),
        ("milestones", "3,5"), ("gamma", 0.0), ("gamma", 1.5),
    ],
    MethodConfig: [("name", ""), ("name", None), ("params", {1: 2}), ("params", ["T"]), ("student_input", "mid")],
    TeacherConfig: [("checkpoint", ""), ("checkpoint", None), ("model", "resnet32x4"), ("model", {"name": "x"})],
    RuntimeConfig: [
        ("device", "gpu"), ("device", ""), ("device", "cuda:"), ("device", "cuda:x"), ("amp", "yes"),
        ("channels_last", None), ("check_data", "no"), ("progress", 2),
    ],
    TrainConfig: [
        ("model", "resnet8"), ("data", {}), ("optim", None), ("method", "kd"), ("teacher", "/t"),
        ("runtime", {}), ("seed", -1), ("seed", 1.0),
    ],
    TeacherServiceConfig: [
        ("replicas", 0), ("num_cpus", -1.0), ("num_gpus", math.nan), ("batch_size", 0), ("ahead", -1),
        ("keep_epochs", 0), ("mode", "push"), ("live_threshold_bytes", 0), ("top_k", 0), ("top_k", 2.0),
        ("precision", "bfloat16"),
    ],
    SweepConfig: [
        ("name", ""), ("methods", "kd"), ("methods", ()), ("methods", ("kd", "")), ("methods", ("kd", 3)),
        ("num_samples", 0), ("metric", ""), ("mode", "up"), ("scaling", {"num_workers": 2}), ("failure", 3),
        ("teacher_service", {}), ("max_concurrent_trials", 0), ("grace_period", 0), ("storage", ""), ("cache_dir", ""),
        ("resume", "yes"), ("seed", -1), ("seeds", -1), ("log", ("wandb",)), ("log", ("tensorboard",)),
        ("verbose", 9), ("verbose", "loud"),
    ],
}
OWNER = {ModelConfig: "model", DataConfig: "data", OptimConfig: "optim", MethodConfig: "method",
         TeacherConfig: "teacher", RuntimeConfig: "runtime", TrainConfig: "train",
         TeacherServiceConfig: "teacher_service", SweepConfig: "sweep"}
REQUIRED = {TeacherConfig: {"checkpoint": "/runs/teacher"}}
CASES = [(kind, name, value) for kind, cases in BAD.items() for name, value in cases]


def test_the_table_covers_every_field_of_every_config_class():
    for kind in OWNER:
        fields = {f.name for f in dataclasses.fields(kind)}
        assert fields == {name for name, _ in BAD[kind]}, (kind.__name__, fields - {n for n, _ in BAD[kind]})


@pytest.mark.parametrize(("kind", "name", "value"), CASES,
                         ids=[f"{k.__name__}.{n}={v!r}" for k, n, v in CASES])
def test_a_bad_value_raises_config_error_naming_the_field(kind, name, value):
    with pytest.raises(ConfigError) as info:
        kind(**{**REQUIRED.get(kind, {}), name: value})
    assert str(info.value).startswith(f"{OWNER[kind]}.{name} = "), str(info.value)
    assert isinstance(info.value, ValueError)  # callers may catch ValueError


@pytest.mark.parametrize("kind", list(OWNER), ids=lambda k: k.__name__)
def test_defaults_are_valid_and_configs_are_frozen(kind):
    config = kind(**REQUIRED.get(kind, {}))
    field = dataclasses.fields(kind)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, getattr(config, field))
    assert dataclasses.replace(config) == config


def test_values_are_normalised_where_json_would_change_them():
    assert OptimConfig(betas=[0.8, 0.9]).betas == (0.8, 0.9)
    assert SweepConfig(methods=["kd"], log=["mlflow"]).methods == ("kd",)
    kwargs = {"num_classes": 10}
    model = ModelConfig(kwargs=kwargs)
    kwargs["num_classes"] = 20  # the config keeps its own copy
    assert model.kwargs == {"num_classes": 10}
    assert [DataConfig(reuse_views=4).view_for_epoch(e) for e in range(6)] == [0, 1, 2, 3, 0, 1]


def test_every_cache_path_comes_from_one_layout_and_a_uri_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layout = CacheLayout.of("cache")
    assert layout.root == tmp_path / "cache" and layout.store == tmp_path / "cache" / "store"
    assert layout.teachers == tmp_path / "cache" / "teachers"
    assert layout.dataset("digits-32") == tmp_path / "cache" / "datasets" / "digits-32"
    assert CacheLayout.of(f"file://{tmp_path}/cache") == layout  # a file:// URI is the path it names
    # the sweep's cache is that absolute path, whatever form it was given in; a URI is refused, naming it
    assert SweepConfig(cache_dir=(tmp_path / "cache").as_uri()).cache_dir == str(tmp_path / "cache")
    assert SweepConfig(cache_dir="cache").cache_dir == str(tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"sweep.cache_dir 's3://bucket/c': the cache holds datasets and trained "
                                          r"teachers, so it must be a path"):
        SweepConfig(cache_dir="s3://bucket/c")
