"""Weights from files, for any raykd model: read a checkpoint, map an official key layout to raykd's, load it
strictly with every mismatch named.

- :func:`read_state_dict` reads ``.safetensors`` files, torch pickles (with ``weights_only=True``, so no pickled
  code runs) and raykd checkpoint directories (their :data:`MODEL_FILE`), and unwraps the
  ``{"state_dict": ...}``, ``{"model": ...}`` (DeiT/Vim), ``{"params_ema": ...}`` / ``{"params": ...}``
  (BasicSR, KAIR, SwinIR, DVMSR; the EMA weights first, the ones those projects evaluate) wrappers.
- :func:`load_weights` loads such a file (or an already loaded mapping) into a model through an optional key
  map: ``None`` (the file already uses the model's names, as the EDSR/RCAN/SwinIR/DVMSR releases do), a
  registered name (``raykd.registry.KEYMAPS.names()``) or plugin import path ``"pkg.mod:fn"``, or any callable
  from the official state dict to raykd's keys.

Key maps are registered next to the model they map into (as models are); ``import raykd.models`` registers
these, each for the official layout a user brings:

- ``"hustvl_vim"``: hustvl/Vim's ImageNet checkpoints (``vim_t_midclstok_76p1acc.pth``,
  ``vim_s_midclstok_80p5acc.pth``, ``{"model": state}``) into ``vim_tiny`` / ``vim_small``. raykd's Vim keeps
  the official names (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``layers.<i>.norm``,
  ``layers.<i>.mixer.{in_proj, conv1d(_b), x_proj(_b), dt_proj(_b), A_log, A_b_log, D(_b), out_proj}``,
  ``norm_f``, ``head``), so the map is the identity and only checks the target. Build the model at the
  checkpoint's ``img_size`` (224): other input sizes resize the position embedding at run time. To start a
  classifier with another number of classes from it (ViMD's HRVM-Net from ImageNet), leave the 1000-class head
  out: ``load_weights(create_model("vim_tiny", num_classes=200), path, keymap="hustvl_vim", exclude=("head",))``.
- ``"basicsr_msrresnet"``: BasicSR's ``MSRResNet`` (``msrresnet_x4`` and the like, ``{"params": ...}``) into
  ``msrresnet`` (:class:`raykd.models.srresnet.MSRResNet`, which keeps BasicSR's names: ``conv_first``,
  ``body.<i>.conv1/conv2``, ``upconv1``, ``upconv2``, ``conv_hr``, ``conv_last``). raykd's ``srresnet`` is
  SRGAN's network with BatchNorm and cannot take these weights; the map refuses it and names the right model.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from raykd.console import UserError, one_line
from raykd.registry import KEYMAPS

__all__ = ["MODEL_FILE", "KeyMap", "load_weights", "read_state_dict", "register_keymap", "same_names"]

# The weights file inside a raykd checkpoint directory (raykd.models.checkpoint).
MODEL_FILE = "model.safetensors"
# Entries that wrap a state dict in released checkpoints, in the order they are preferred.
_WRAPPERS = ("params_ema", "params", "state_dict", "model")
_SHOWN = 10  # keys listed per kind of mismatch
_EXPECTED = "expected a .pth/.pt saved by torch.save or a .safetensors file"
_RESAVE = "re-save the state_dict with torch.save(model.state_dict(), path)"
# How a torch file of the pre-zip format (torch < 1.6) starts: its magic number, pickled with the default protocol 2.
_LEGACY_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class KeyMap:
    """A registered key map: ``fn`` turns an official state dict into raykd's keys for a model of one of
    ``targets`` (``model`` names the registry entry to build)."""

    name: str
    fn: Callable[[Mapping[str, Tensor]], Mapping[str, Tensor]]
    targets: tuple[type[nn.Module], ...]
    model: str


def register_keymap(name: str, targets: tuple[type[nn.Module], ...], model: str):
    """Register the decorated ``fn(state) -> state`` in :data:`raykd.registry.KEYMAPS` as key map ``name`` into
    models of type ``targets``."""

    def add(fn: Callable[[Mapping[str, Tensor]], Mapping[str, Tensor]]):
        KEYMAPS.register(KeyMap(name, fn, targets, model), name=name)
        return fn

    return add


def same_names(state: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """The key map of a layout whose names raykd's model already uses: registering it still checks the target."""
    return state


def read_state_dict(path: str | os.PathLike, param_key: str | None = None) -> StateDict:
    """The state dict stored at ``path``: a ``.safetensors`` file, a torch file (read with ``weights_only=True``),
    or a raykd checkpoint directory. Wrappers are unwrapped (module docstring); ``param_key`` picks an entry by
    name instead. A file that is not such weights (empty, truncated, damaged, another format, pickled objects) is
    a :class:`~raykd.console.UserError` naming it, what is wrong and what would be right."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise UserError(f"{path} is a directory without {MODEL_FILE}: give a weights file (.pth/.pt/.safetensors) "
                            "or a raykd checkpoint directory")
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes: an interrupted download or copy?); {_EXPECTED}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _unwrap(_read_torch_file(path), param_key, str(path))


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise UserError(f"{path}: truncated or damaged safetensors file ({one_line(err)}); fetch it again or re-save "
                        "it with safetensors.torch.save_file") from None


def _read_torch_file(path: Path) -> object:
    """``torch.load(path, weights_only=True)``, so that no pickled code runs, failing in raykd's words: torch's
    own messages call a damaged file one of Python objects and advise ``weights_only=False``, which raykd never
    does."""
    is_zip = zipfile.is_zipfile(path)
    with open(path, "rb") as fh:
        head = fh.read(len(_LEGACY_HEAD))
    # torch.save writes a zip archive; torch < 1.6 (and _use_new_zipfile_serialization=False) a bare pickle
    if not is_zip and not head.startswith(pickle.PROTO):
        raise UserError(f"{path}: not a PyTorch weights file (truncated or another format); {_EXPECTED}")
    if is_zip and _is_torchscript(path):  # which torch.load would hand to torch.jit.load, warning
        raise UserError(f"{path} is a TorchScript archive (torch.jit.save), not weights; {_RESAVE}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's zip and pickle readers raise RuntimeError, OSError, EOFError... on bad files
        raise UserError(_why_torch_refused(path, err, is_zip, head)) from None


def _why_torch_refused(path: Path, err: Exception, is_zip: bool, head: bytes) -> str:
    """What is wrong with a torch file that ``torch.load`` refused, read from the file itself (its zip archive's
    members and checksums) rather than from torch's messages, which change between versions."""
    damaged = _damaged_member(path) if is_zip else None
    if damaged is not None:
        return f"{path}: truncated or damaged PyTorch weights file ({damaged}); {_EXPECTED}"
    if isinstance(err, pickle.UnpicklingError) and (is_zip or head.startswith(_LEGACY_HEAD)):
        found = re.search(r"GLOBAL (\S+)", str(err))  # the first object torch refused, named in most versions
        return (f"{path} holds Python objects besides tensors{f' ({found[1]})' if found else ''}; raykd loads "
                f"weights only (torch.load weights_only=True) — {_RESAVE}")
    return f"{path}: not a PyTorch weights file (truncated or another format); {_EXPECTED}"


def _damaged_member(path: Path) -> str | None:
    """What is damaged in the zip archive at ``path`` (torch does not check its members' CRCs), or None."""
    with zipfile.ZipFile(path) as archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:  # a member's own header is unreadable
            return f"its zip archive is damaged: {one_line(err)}"
    return None if bad is None else f"{bad} fails its checksum"


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _unwrap(raw: object, param_key: str | None, source: str) -> StateDict:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source} holds a {type(raw).__name__}, not a state dict (a mapping of names to tensors)")
    if param_key is not None:
        if param_key not in raw:
            raise KeyError(f"{source}: no entry {param_key!r}; top-level keys are {sorted(raw)[:_SHOWN]}")
        raw = raw[param_key]
    else:
        while isinstance(raw, Mapping) and not _is_state_dict(raw):
            wrapper = next((k for k in _WRAPPERS if isinstance(raw.get(k), Mapping)), None)
            if wrapper is None:
                break
            raw = raw[wrapper]
    if not isinstance(raw, Mapping) or not _is_state_dict(raw):
        keys = sorted(raw)[:_SHOWN] if isinstance(raw, Mapping) else type(raw).__name__
        raise ValueError(
            f"{source} is not a state dict (tensor values) nor one wrapped in {list(_WRAPPERS)}; its top-level "
            f"keys are {keys}; pass param_key= to pick the entry holding the weights"
        )
    return dict(raw)


def _is_state_dict(mapping: Mapping) -> bool:
    return bool(mapping) and all(isinstance(v, Tensor) for v in mapping.values())


def _resolve_keymap(keymap: str | Callable | None, model: nn.Module) -> Callable[[Mapping[str, Tensor]], Mapping]:
    if keymap is None:
        return dict
    if callable(keymap):
        return keymap
    entry = KEYMAPS.get(keymap)
    if not isinstance(entry, KeyMap):  # a plugin "pkg.mod:fn" names a plain fn(state) -> state
        if not callable(entry):
            raise TypeError(f"key map {keymap!r} is {entry!r}, neither a KeyMap nor a function of a state dict")
        return entry
    if not isinstance(model, entry.targets):
        raise ValueError(
            f"key map {keymap!r} maps into {' / '.join(t.__name__ for t in entry.targets)}, not "
            f"{type(model).__name__}: build the model with create_model({entry.model!r}, ...)"
        )
    return entry.fn


def _excluded(key: str, exclude: Iterable[str]) -> bool:
    return any(key == e.rstrip(".") or key.startswith(e.rstrip(".") + ".") for e in exclude)


def _shape_hint(model: nn.Module, key: str, shape: tuple[int, ...]) -> str:
    """Why a stored tensor may have another shape: the model's own explanation (``weight_mismatch_hint``), or a
    classifier built for another number of classes."""
    explain = getattr(model, "weight_mismatch_hint", None)
    hint = explain(key, shape) if callable(explain) else ""
    prefix = _classifier_prefix(model)
    if not hint and prefix is not None and key.startswith(prefix + "."):
        hint = (f" (a classifier for another number of classes: pass adapt_head=True or exclude=({prefix!r},) to "
                "keep the model's own, freshly initialised head)")
    return hint


def _classifier_prefix(model: nn.Module) -> str | None:
    """The name of ``model``'s classifier head (the module timm's ``get_classifier()`` returns), or None."""
    get_classifier = getattr(model, "get_classifier", None)
    if not callable(get_classifier):
        return None
    head = get_classifier()
    return next((name for name, module in model.named_modules() if module is head and name), None)


def _other_head(model: nn.Module, state: Mapping[str, Tensor]) -> tuple[str, ...]:
    """``(prefix,)`` of ``model``'s classifier head when ``state`` (in the model's names) holds that head with
    other shapes (a classifier for another number of classes); else ``()``."""
    prefix = _classifier_prefix(model)
    if prefix is None:
        return ()
    own = model.state_dict()
    return (prefix,) if any(k.startswith(prefix + ".") and k in own and own[k].shape != v.shape
                            for k, v in state.items()) else ()


def load_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, object],
    keymap: str | Callable[[Mapping[str, Tensor]], Mapping[str, Tensor]] | None = None,
    strict: bool = True,
    *,
    param_key: str | None = None,
    exclude: Iterable[str] = (),
    adapt_head: bool = False,
) -> nn.Module:
    """Load ``source`` into ``model`` and return ``model``.

    ``source`` is a path (see :func:`read_state_dict`) or an already loaded mapping (wrappers are unwrapped the
    same way; ``param_key`` picks an entry). ``keymap`` maps the stored names to the model's (module
    docstring). ``exclude`` lists keys or key prefixes (``"head"`` covers ``head.weight`` and ``head.bias``)
    that are neither loaded nor required: those tensors keep the model's own values. ``adapt_head`` excludes the
    model's classifier head (``get_classifier()``) when the stored one has other shapes: a classifier for another
    number of classes (an ImageNet checkpoint started on CUB) keeps its own, freshly initialised head.

    Every missing, unexpected and wrongly shaped key is listed, by name and with the file, in one ValueError
    before anything is copied, so a failed load leaves ``model`` untouched. ``strict=False`` tolerates missing
    and unexpected keys (never wrong shapes).
    """
    if isinstance(source, Mapping):
        name = f"state dict given to load_weights({type(model).__name__})"
        state = _unwrap(source, param_key, name)
    else:
        name = str(source)
        state = read_state_dict(source, param_key)
    mapped = _resolve_keymap(keymap, model)(state)
    exclude = (*exclude, *(_other_head(model, mapped) if adapt_head else ()))
    state = {k: v for k, v in mapped.items() if not _excluded(k, exclude)}
    expected = {k: v for k, v in model.state_dict().items() if not _excluded(k, exclude)}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        + _shape_hint(model, k, tuple(state[k].shape))
        for k in sorted(expected.keys() & state.keys())
        if state[k].shape != expected[k].shape
    ]
    problems = [("wrong shape", wrong_shape)]
    if strict:
        problems += [("missing", missing), ("unexpected", unexpected)]
    lines = []
    for title, items in problems:
        if items:
            shown = "\n    ".join(items[:_SHOWN])
            more = f"\n    ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
            lines.append(f"  {len(items)} {title}:\n    {shown}{more}")
    if lines:
        via = f" through key map {keymap!r}" if isinstance(keymap, str) else ""
        raise ValueError(
            f"{name}{via} does not fit {type(model).__name__} (check the model name, scale and config):\n"
            + "\n".join(lines)
        )
    # Every key was checked above; excluded ones are the only model keys left out.
    model.load_state_dict(state, strict=False)
    return model
