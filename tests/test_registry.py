"""raykd.registry: register / get / scopes / duplicates, plugins by import path, and clear errors."""
from __future__ import annotations

import sys
import textwrap

import pytest

import raykd.data.classification  # noqa: F401  (registers the cls datasets)
import raykd.data.sr  # noqa: F401  (registers the SR datasets)
import raykd.methods  # noqa: F401  (registers the methods)
import raykd.models  # noqa: F401  (registers the models and key maps)
from raykd.registry import DATASETS, KEYMAPS, METHODS, MODELS, TASKS, Registry, is_import_path


def test_register_and_get_without_scopes():
    reg = Registry("widget")

    @reg.register()
    def small():
        return "small"

    @reg.register(name="big")
    def make_big():
        return "big"

    class Named:
        name = "named"

    reg.register(Named)
    assert reg.get("small") is small and reg.get("big") is make_big and reg.get("named") is Named
    assert reg.names() == ["big", "named", "small"]
    assert reg.has("big") and not reg.has("make_big")
    assert repr(reg) == "Registry('widget', 3 entries)"
    reg.register(small)  # the same object again is not a clash (a module imported twice)
    assert reg.names() == ["big", "named", "small"]
    with pytest.raises(ValueError, match="widgets have no scopes; got scope 'cls'"):
        reg.get("small", scope="cls")


def test_scopes_keep_one_name_per_task_apart():
    reg = Registry("method", scopes=("cls", "sr"))

    class ClsNone:
        name, task = "none", "cls"

    class SRNone:
        name, task = "none", "sr"

    reg.register(ClsNone)  # the scope comes from the class's task
    reg.register(SRNone)

    @reg.register(name="l1", scope="sr")
    def l1():
        pass

    assert reg.get("none", "cls") is ClsNone and reg.get("none", "sr") is SRNone
    assert reg.names("cls") == ["none"] and reg.names("sr") == ["l1", "none"]
    assert reg.names() == ["l1", "none"]  # every scope's names, once each
    assert reg.has("l1", "sr") and not reg.has("l1", "cls")
    with pytest.raises(KeyError, match=r"unknown cls method 'l1'; registered: \['none'\]"):
        reg.get("l1", "cls")
    with pytest.raises(ValueError, match=r"method scope 'seg' is not one of \['cls', 'sr'\]"):
        reg.get("none", "seg")
    with pytest.raises(ValueError, match="method scope None"):
        reg.get("none")
    with pytest.raises(ValueError, match="method scope 'seg'"):
        reg.register(lambda: None, name="x", scope="seg")
    with pytest.raises(ValueError, match="method scope None"):  # no scope given and no task attribute
        reg.register(lambda: None, name="y")


def test_duplicate_names_are_refused_naming_both_objects():
    reg = Registry("model")

    @reg.register(name="net")
    def first():
        pass

    def second():
        pass

    with pytest.raises(ValueError, match=r"model 'net' is registered twice: .*first and .*second"):
        reg.register(second, name="net")
    assert reg.get("net") is first
    scoped = Registry("dataset", scopes=("cls", "sr"))
    scoped.register(first, name="d", scope="cls")
    scoped.register(second, name="d", scope="sr")  # another scope: no clash
    with pytest.raises(ValueError, match="dataset 'd' for sr is registered twice"):
        scoped.register(first, name="d", scope="sr")


@pytest.mark.parametrize("bad", ["pkg.mod:attr", 3])
def test_registered_names_must_be_plain_non_empty_strings(bad):
    with pytest.raises(ValueError, match=rf"model name {bad!r} must be a non-empty string without ':'"):
        Registry("model").register(lambda: None, name=bad)


@pytest.mark.parametrize("bad", ["", None, 3])
def test_looked_up_names_must_be_non_empty_strings(bad):
    with pytest.raises(ValueError, match=rf"model name must be a non-empty string, got {bad!r}"):
        Registry("model").get(bad)


def test_is_import_path():
    assert is_import_path("pkg.mod:attr") and is_import_path("mod:Cls.inner")
    assert not any(is_import_path(n) for n in ("resnet8", ":attr", "mod:", "mod.attr"))


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A user's module, importable from tmp_path, as a module beside the driver script would be."""
    package = tmp_path / "user_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        CALLS = []

        def tiny_net(num_classes=3):
            CALLS.append(num_classes)
            return nn.Linear(4, num_classes)

        class Holder:
            class Inner:
                value = 42
    """))
    (package / "broken.py").write_text("import no_such_dependency_of_the_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_plugins"
    for name in [m for m in sys.modules if m.startswith("user_plugins")]:
        del sys.modules[name]


def test_a_plugin_is_named_by_import_path_in_any_registry(plugin):
    import torch

    from raykd.models import create_model

    fn = MODELS.get(f"{plugin}.nets:tiny_net")
    assert fn.__name__ == "tiny_net" and fn.__module__ == f"{plugin}.nets"
    net = create_model(f"{plugin}.nets:tiny_net", num_classes=5)
    assert isinstance(net, torch.nn.Linear) and net.out_features == 5
    assert sys.modules[f"{plugin}.nets"].CALLS == [5]
    # an import path needs no scope, and resolves the same in every registry
    assert METHODS.get(f"{plugin}.nets:tiny_net", scope="cls") is fn
    assert DATASETS.get(f"{plugin}.nets:tiny_net") is fn
    assert MODELS.get(f"{plugin}.nets:Holder.Inner").value == 42  # dotted attributes
    assert not MODELS.has(f"{plugin}.nets:tiny_net")  # resolving registers nothing


def test_unimportable_plugins_are_named_clearly(plugin):
    with pytest.raises(ImportError, match=r"model 'no_such_pkg\.nets:f': cannot import module 'no_such_pkg\.nets'"):
        MODELS.get("no_such_pkg.nets:f")
    with pytest.raises(ImportError, match=r"method 'user_plugins\.broken:X'.*no_such_dependency_of_the_plugin"):
        METHODS.get(f"{plugin}.broken:X", scope="cls")
    with pytest.raises(ImportError, match=r"model 'user_plugins\.nets:missing': module 'user_plugins\.nets' has "
                                             r"no attribute 'missing'"):
        MODELS.get(f"{plugin}.nets:missing")
    with pytest.raises(ImportError, match="no attribute 'Holder.Nope'"):
        MODELS.get(f"{plugin}.nets:Holder.Nope")


def test_unknown_names_list_what_is_registered():
    with pytest.raises(KeyError, match=r"unknown model 'resnet9000'; registered: \[.*'resnet8x4'.*\] \(or name your "
                                       r"own as 'package\.module:attribute'\)"):
        MODELS.get("resnet9000")
    with pytest.raises(KeyError, match=r"unknown sr dataset 'cifar10'; registered: \[.*'div2k'"):
        DATASETS.get("cifar10", scope="sr")
    with pytest.raises(KeyError, match="unknown key map 'nope'"):
        KEYMAPS.get("nope")


def test_the_project_registries_hold_their_components():
    assert {"resnet8x4", "edsr_baseline", "mtkd_aggregator", "mtkd_teacher", "dvmsr", "vim_tiny"} <= set(
        MODELS.names())
    assert {"none", "kd", "dkd", "figkd", "dfd", "fitnet", "at", "vimd"} <= set(METHODS.names("cls"))
    assert {"none", "l1kd", "mtkd", "dvmsr"} <= set(METHODS.names("sr"))
    assert {"tinyimagenet", "cifar10", "cifar100", "imagefolder", "cub200", "demo"} <= set(DATASETS.names("cls"))
    assert {"demo_sr", "div2k", "paired", "hr_folder"} <= set(DATASETS.names("sr"))
    assert {"hustvl_vim", "basicsr_msrresnet"} <= set(KEYMAPS.names())
    assert METHODS.get("none", "cls") is not METHODS.get("none", "sr")
    assert TASKS.scopes == () and MODELS.scopes == () and METHODS.scopes == DATASETS.scopes == ("cls", "sr")
