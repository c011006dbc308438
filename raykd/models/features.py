"""Named outputs of one forward pass, captured with hooks that live only for that call.

The output names are the vocabulary of :mod:`raykd.methods.base`:

- the model's own output, what its ``forward`` returns, always included under the name the caller gives it
  (``"logits"`` for a classifier, ``"image"`` for a super-resolution network);
- ``"penultimate"``: the input of the classifier head ``model.get_classifier()``, flattened to ``(B, D)``;
- ``"stage:<k>"``: the output of stage ``k``, indexed like a Python list (``stage:-1`` is the last stage).
  Stages are ``model.stage_names`` for raykd nets and the modules of ``model.feature_info`` for timm models
  (timm lists the stem first, e.g. ``act1`` for a ResNet, so prefer negative indices across families);
- any other string: a submodule path, e.g. ``"layer2.0.conv1"``.

A model that defines ``extract(x, names) -> dict[str, Tensor]`` (e.g. the Vim encoder's hidden states) gets
the whole request instead, and must return its own output under ``"output"`` and every requested name.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


__all__ = ["capture", "layer_index", "output_shapes", "stage_names", "unwrap_model"]


def layer_index(name: str, prefix: str, count: int, owner: str) -> int:
    """The layer ``name = "<prefix>:<k>"`` points at among ``count`` layers, ``k`` indexed like a Python list;
    a clear error naming ``owner`` (the model's class) otherwise."""
    try:
        return range(count)[int(name[len(prefix) + 1:])]
    except (ValueError, IndexError):
        raise ValueError(f"{owner}: {name!r} is not '{prefix}:<k>' with an integer k in [{-count}, {count})") from None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside (possibly nested) ``DistributedDataParallel`` wrappers."""
    while isinstance(model, DistributedDataParallel):
        model = model.module
    return model


def stage_names(model: nn.Module) -> tuple[str, ...]:
    """Module paths of the model's stages in forward order; ``()`` when the model declares none."""
    net = unwrap_model(model)
    names = getattr(net, "stage_names", None)
    if names is not None:
        return tuple(names)
    info = getattr(net, "feature_info", None)
    if isinstance(info, (list, tuple)):
        return tuple(entry["module"] for entry in info)
    return ()


def _unknown(net: nn.Module, name: str, why: str) -> ValueError:
    stages = stage_names(net)
    stage_help = (
        f"'stage:<k>' for k in [{-len(stages)}, {len(stages)}) over stages {list(stages)}"
        if stages
        else f"no 'stage:<k>' ({type(net).__name__} has neither stage_names nor a timm feature_info)"
    )
    return ValueError(
        f"unknown output name {name!r} for {type(net).__name__}: {why}. Valid names: the model's own output, "
        f"'penultimate', {stage_help}, or a submodule path from model.named_modules()"
    )


def _resolve(net: nn.Module, name: str) -> tuple[nn.Module, bool]:
    """The module to hook for ``name`` and whether its input (True) or its output (False) is wanted."""
    if name == "penultimate":
        get_classifier = getattr(net, "get_classifier", None)
        if not callable(get_classifier):
            raise _unknown(net, name, "the model has no get_classifier() to find the head's input")
        return get_classifier(), True
    if name.startswith("stage:"):
        stages = stage_names(net)
        try:
            return net.get_submodule(stages[int(name[len("stage:"):])]), False
        except (ValueError, IndexError):
            raise _unknown(net, name, "the stage index is not an integer inside the stage list") from None
    try:
        return net.get_submodule(name), False
    except AttributeError:
        raise _unknown(net, name, "no such submodule") from None


def _version(value: Any) -> int | None:
    # Inference-mode tensors carry no version counter.
    if not isinstance(value, Tensor) or value.is_inference():
        return None
    return value._version


def _capture_output(store: list[tuple[Any, int | None]], module: nn.Module, args: tuple, output: Any) -> None:
    store.append((output, _version(output)))


def _capture_input(store: list[tuple[Any, int | None]], module: nn.Module, args: tuple) -> None:
    value = args[0] if args else None
    store.append((value, _version(value)))


def _call_as_forward(model: nn.Module, net: nn.Module, fn: Callable[[Tensor], Any], x: Tensor) -> Any:
    """Run ``fn(x)`` as ``net``'s forward, through ``model``'s wrapper so DDP still prepares its gradient sync."""
    if model is net:
        return fn(x)
    shadowed = net.__dict__.get("forward")
    net.forward = fn
    try:
        return model(x)
    finally:
        if shadowed is None:
            del net.forward
        else:
            net.forward = shadowed


def capture(model: nn.Module, x: Tensor, names: Sequence[str], output: str = "logits") -> dict[str, Tensor]:
    """One forward pass of ``model`` on ``x``, returning its own output under ``output`` and every output named
    in ``names``.

    Gradients flow through the returned tensors exactly as through the model (wrap the call in
    ``torch.no_grad()`` for a frozen teacher). ``model`` may be wrapped in ``DistributedDataParallel``:
    submodules are looked up on the inner network, but the wrapper's forward is the one called. Hooks are
    removed before returning, also when the forward raises.
    """
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of output names, not the string {names!r}")
    net = unwrap_model(model)
    wanted = [n for n in dict.fromkeys(names) if n != output]

    extract = getattr(net, "extract", None)
    if callable(extract):
        out = _call_as_forward(model, net, lambda inp: extract(inp, tuple(wanted)), x)
        missing = [n for n in ["output", *wanted] if n not in out]
        if missing:
            raise KeyError(f"{type(net).__name__}.extract returned {sorted(out)} but not the requested {missing}")
        return {output: out["output"], **{n: out[n] for n in wanted}}

    targets = {name: _resolve(net, name) for name in wanted}
    captured: dict[str, list[tuple[Any, int | None]]] = {name: [] for name in targets}
    handles = []
    try:
        for name, (module, want_input) in targets.items():
            if want_input:
                handles.append(module.register_forward_pre_hook(partial(_capture_input, captured[name])))
            else:
                handles.append(module.register_forward_hook(partial(_capture_output, captured[name])))
        result_tensor = model(x)
    finally:
        for handle in handles:
            handle.remove()

    if not isinstance(result_tensor, Tensor):
        raise TypeError(f"{type(net).__name__}.forward returned {type(result_tensor).__name__}; capture needs a model "
                        "whose forward returns one tensor")
    result = {output: result_tensor}
    for name, store in captured.items():
        module_desc = f"{name!r} ({type(targets[name][0]).__name__})"
        if len(store) != 1:
            raise RuntimeError(f"module for {module_desc} ran {len(store)} times in one forward of "
                               f"{type(net).__name__}; pick a module that runs exactly once")
        value, version = store[0]
        if not isinstance(value, Tensor):
            raise TypeError(f"module for {module_desc} produced {type(value).__name__}, not a Tensor; name a "
                            "submodule whose output is a single tensor")
        # A later in-place op (e.g. ReLU(inplace=True)) would silently turn the capture into another value.
        if _version(value) != version:
            raise RuntimeError(f"the tensor captured for {module_desc} was modified in place later in the forward "
                               f"of {type(net).__name__}; name the module that consumes it (e.g. the activation) "
                               "instead")
        result[name] = value.flatten(1) if name == "penultimate" else value
    return result


def output_shapes(model: nn.Module, names: Sequence[str], input_shape: Sequence[int], output: str = "logits"
                  ) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes (batch dimension dropped) of the model's ``output`` and ``names`` for inputs of
    ``input_shape`` (no batch, e.g. ``(3, 32, 32)``).

    The probe is one no-grad forward of a zero batch of 2 in eval mode on the model's own device and dtype, run on
    the unwrapped network so that no DDP collective is issued; every submodule's train/eval flag is restored.
    """
    net = unwrap_model(model)
    params = [p for p in net.parameters() if p.is_floating_point()]
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.get_default_dtype()
    probe = torch.zeros(2, *input_shape, device=device, dtype=dtype)
    modes = [(m, m.training) for m in net.modules()]
    try:
        net.eval()
        with torch.no_grad():
            out = capture(net, probe, names, output)
    finally:
        for module, training in modes:
            module.training = training
    return {name: tuple(value.shape[1:]) for name, value in out.items()}
