"""Selective scan / causal conv ops (raykd.models.ops) and the Mamba mixer and block (raykd.models.ssm)."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raykd.models.ops import causal_conv1d, cuda_kernels_available, selective_scan
from raykd.models.ssm import Mamba, MambaBlock


def _scan_inputs(b, d, l, n, groups, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    bc_shape = (b, n, l) if groups is None else (b, groups, n, l)
    return {
        "u": rnd(b, d, l),
        "delta": rnd(b, d, l, scale=0.5),
        "A": -torch.rand(d, n, generator=gen, dtype=torch.float64).to(dtype) - 0.1,
        "B": rnd(*bc_shape),
        "C": rnd(*bc_shape),
        "D": rnd(d),
        "z": rnd(b, d, l),
        "delta_bias": rnd(d, scale=0.5),
    }


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    # Relative to the tensor's scale: gradients of some entries are legitimately ~0.
    scale = expected.abs().max().item() or 1.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


SHAPES = [  # (b, d, l, n, groups, chunk)
    (2, 4, 1, 3, None, 4),  # a single step
    (2, 6, 13, 5, 3, 4),  # l not a multiple of the chunk, grouped B/C
    (1, 4, 16, 16, None, 8),  # l a multiple of the chunk
    (3, 8, 37, 4, 2, 64),  # one chunk longer than the sequence, grouped
    (2, 3, 9, 2, 1, 1),  # chunk of one step, explicit single group
]
OPTIONS = [  # (use D, use z, use delta_bias, softplus)
    (False, False, False, False),
    (True, True, True, True),
    (True, False, False, True),
    (False, True, True, False),
]


@pytest.mark.parametrize("dtype,rel", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", OPTIONS)
def test_torch_backend_matches_reference_values_and_gradients(dtype, rel, shape, options):
    b, d, l, n, groups, chunk = shape
    use_d, use_z, use_bias, softplus = options
    inputs = _scan_inputs(b, d, l, n, groups, dtype)
    if not use_d:
        inputs["D"] = None
    if not use_z:
        inputs["z"] = None
    if not use_bias:
        inputs["delta_bias"] = None
    leaves = {k: v.requires_grad_() for k, v in inputs.items() if v is not None}
    weight = torch.randn(b, d, l, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)

    results = {}
    for backend in ("reference", "torch"):
        y = selective_scan(**inputs, delta_softplus=softplus, backend=backend, chunk_size=chunk)
        assert y.shape == (b, d, l) and y.dtype == dtype
        grads = torch.autograd.grad((y * weight).sum(), list(leaves.values()))
        results[backend] = (y.detach(), dict(zip(leaves, grads)))
    (y_ref, g_ref), (y_torch, g_torch) = results["reference"], results["torch"]
    _close(y_torch, y_ref, rel)
    for name in leaves:
        _close(g_torch[name], g_ref[name], rel)


def _by_hand(u, delta, A, B, C, D, z, delta_bias):
    """The recurrence of Mamba Alg. 2 written with Python scalars over numpy arrays (no torch)."""
    b, d, l = u.shape
    n = A.shape[1]
    out = np.zeros((b, d, l))
    for i in range(b):
        for c in range(d):
            h = np.zeros(n)
            for t in range(l):
                dt = math.log1p(math.exp(delta[i, c, t] + delta_bias[c]))
                h = np.exp(dt * A[c]) * h + dt * B[i, :, t] * u[i, c, t]
                y = float(h @ C[i, :, t]) + D[c] * u[i, c, t]
                out[i, c, t] = y * z[i, c, t] / (1 + math.exp(-z[i, c, t]))
    return out


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_scan_matches_hand_written_recurrence(backend):
    inputs = _scan_inputs(2, 3, 7, 4, None, torch.float64, seed=3)
    expected = _by_hand(*(inputs[k].numpy() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")))
    y = selective_scan(**inputs, delta_softplus=True, backend=backend, chunk_size=3)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_torch_backend_gradcheck():
    inputs = _scan_inputs(1, 2, 5, 3, None, torch.float64, seed=4)
    names = ("u", "delta", "A", "B", "C")
    leaves = [inputs[k].requires_grad_() for k in names]

    def fn(*args):
        return selective_scan(*args, delta_softplus=True, backend="torch", chunk_size=2)

    assert torch.autograd.gradcheck(fn, leaves)


def test_grouped_b_c_serve_their_own_channels():
    inputs = _scan_inputs(2, 6, 8, 3, 2, torch.float64, seed=5)
    y = selective_scan(**inputs, backend="torch")
    # Channels 3..5 use group 1: the same as scanning them alone with that group's B, C.
    part = {k: v for k, v in inputs.items()}
    part.update(
        u=inputs["u"][:, 3:], delta=inputs["delta"][:, 3:], A=inputs["A"][3:], B=inputs["B"][:, 1], C=inputs["C"][:, 1],
        D=inputs["D"][3:], z=inputs["z"][:, 3:], delta_bias=inputs["delta_bias"][3:],
    )
    _close(y[:, 3:], selective_scan(**part, backend="torch"), 1e-12)


def test_long_decay_does_not_overflow_float32():
    # Cumulative delta*A reaches -1e3 to -1e4 over the sequence: exp of a cumulative sum would underflow.
    inputs = _scan_inputs(1, 2, 200, 4, None, torch.float32, seed=6)
    inputs["delta"] = torch.full_like(inputs["delta"], 50.0)
    ys = [selective_scan(**inputs, backend=b) for b in ("reference", "torch")]
    assert torch.isfinite(ys[1]).all()
    _close(ys[1], ys[0], 1e-4)


def test_half_precision_inputs_return_their_dtype():
    inputs = _scan_inputs(1, 4, 6, 2, None, torch.float32, seed=7)
    low = {k: v.to(torch.bfloat16) for k, v in inputs.items()}
    y = selective_scan(**low, backend="torch")
    assert y.dtype == torch.bfloat16
    expected = selective_scan(**{k: v.float() for k, v in low.items()}, backend="reference")
    _close(y.float(), expected, 1e-2)


@pytest.mark.skipif(cuda_kernels_available(), reason="the CUDA extension is installed here")
def test_cuda_backend_without_extension_says_how_to_install():
    inputs = _scan_inputs(1, 2, 3, 2, None, torch.float32)
    with pytest.raises(RuntimeError, match=r"pip install raykd\[cuda\]"):
        selective_scan(**inputs, backend="cuda")
    with pytest.raises(RuntimeError, match=r"pip install raykd\[cuda\]"):
        causal_conv1d(inputs["u"], torch.ones(2, 4), backend="cuda")
    # "auto" silently uses PyTorch on CPU tensors.
    _close(selective_scan(**inputs, backend="auto"), selective_scan(**inputs, backend="reference"), 1e-5)


def test_bad_arguments_name_the_problem():
    inputs = _scan_inputs(1, 4, 3, 2, None, torch.float32)
    with pytest.raises(ValueError, match="backend='fast'"):
        selective_scan(**inputs, backend="fast")
    with pytest.raises(ValueError, match=r"B has shape \(1, 3, 2, 3\)"):
        selective_scan(**{**inputs, "B": torch.zeros(1, 3, 2, 3)})
    with pytest.raises(ValueError, match="A must be a real"):
        selective_scan(**{**inputs, "A": torch.zeros(4, 2, dtype=torch.complex64)})


@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_conv1d_matches_explicit_sum(activation):
    gen = torch.Generator().manual_seed(8)
    x, w, bias = torch.randn(2, 3, 7, generator=gen), torch.randn(3, 4, generator=gen), torch.randn(3, generator=gen)
    y = causal_conv1d(x, w, bias, activation, backend="torch")
    xn, wn = x.numpy(), w.numpy()
    expected = np.zeros((2, 3, 7))
    for t in range(7):
        for k in range(4):
            src = t - 3 + k
            if src >= 0:
                expected[:, :, t] += wn[:, k] * xn[:, :, src]
    expected += bias.numpy()[:, None]
    if activation == "silu":
        expected = expected / (1 + np.exp(-expected))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)


def _mamba_input(l=10):
    return torch.randn(2, l, 8, generator=torch.Generator().manual_seed(9))


def test_unidirectional_mamba_is_causal():
    torch.manual_seed(0)
    layer = Mamba(8, d_state=4, backend="torch")
    x = _mamba_input()
    changed = x.clone()
    changed[:, 6:] += 1.0
    y, y_changed = layer(x), layer(changed)
    torch.testing.assert_close(y[:, :6], y_changed[:, :6])
    assert not torch.allclose(y[:, 6:], y_changed[:, 6:])


def test_bidirectional_mamba_with_tied_directions_commutes_with_reversal():
    torch.manual_seed(0)
    layer = Mamba(8, d_state=4, bidirectional=True, backend="torch")
    with torch.no_grad():
        for name in ("conv1d", "x_proj", "dt_proj"):
            for p_b, p in zip(getattr(layer, f"{name}_b").parameters(), getattr(layer, name).parameters()):
                p_b.copy_(p)
        layer.A_b_log.copy_(layer.A_log)
        layer.D_b.copy_(layer.D)
    x = _mamba_input()
    torch.testing.assert_close(layer(x.flip(1)), layer(x).flip(1), rtol=1e-5, atol=1e-6)
    # and a later token does influence an earlier one, through the backward direction
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(layer(x)[:, 0], layer(changed)[:, 0])


def test_mamba_initialisation_and_parameter_names():
    layer = Mamba(32, d_state=16, bidirectional=True)
    n_inner = 64
    assert layer.dt_rank == 2
    expected_a = torch.log(torch.arange(1, 17, dtype=torch.float32)).expand(n_inner, 16)
    for a_log, D, dt_proj in ((layer.A_log, layer.D, layer.dt_proj), (layer.A_b_log, layer.D_b, layer.dt_proj_b)):
        torch.testing.assert_close(a_log, expected_a)
        torch.testing.assert_close(D, torch.ones(n_inner))
        dt = F.softplus(dt_proj.bias)
        assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    names = {k for k, _ in layer.named_parameters()}
    assert {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
            "A_log", "D", "conv1d_b.weight", "x_proj_b.weight", "dt_proj_b.bias", "A_b_log", "D_b",
            "out_proj.weight"} <= names


def test_bidirectional_mamba_is_the_mean_of_two_unidirectional_scans():
    """Vim Alg. 1: shared in/out projections, the backward branch scans the flipped sequence and is flipped
    back, and the directions are averaged (``if_devide_out``)."""
    torch.manual_seed(0)
    bi = Mamba(8, d_state=4, bidirectional=True, backend="torch")
    forward, backward = Mamba(8, d_state=4, backend="torch"), Mamba(8, d_state=4, backend="torch")
    with torch.no_grad():
        for uni, suffix in ((forward, ""), (backward, "_b")):
            uni.in_proj.weight.copy_(bi.in_proj.weight)
            uni.out_proj.weight.copy_(bi.out_proj.weight)
            for name in ("conv1d", "x_proj", "dt_proj"):
                for p_uni, p_bi in zip(getattr(uni, name).parameters(), getattr(bi, name + suffix).parameters()):
                    p_uni.copy_(p_bi)
            uni.A_log.copy_(bi.A_b_log if suffix else bi.A_log)
            uni.D.copy_(getattr(bi, "D" + suffix))
    x = _mamba_input()
    expected = (forward(x) + backward(x.flip(1)).flip(1)) / 2
    torch.testing.assert_close(bi(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm, norm_type", [("layer", torch.nn.LayerNorm), ("rms", torch.nn.RMSNorm)])
def test_mamba_block_is_a_pre_norm_residual_and_the_release_variant_drops_it(norm, norm_type):
    torch.manual_seed(0)
    block = MambaBlock(8, Mamba(8, d_state=4, backend="torch"), norm=norm).eval()
    assert isinstance(block.norm, norm_type)
    assert {k.split(".")[0] for k in block.state_dict()} == {"mixer", "norm"}  # the official key paths
    x = _mamba_input()
    mixed = block.mixer(block.norm(x))
    torch.testing.assert_close(block(x), x + mixed)
    block.residual = False
    torch.testing.assert_close(block(x), mixed)
    with pytest.raises(ValueError, match="norm='batch'"):
        MambaBlock(8, block.mixer, norm="batch")


def test_release_variant_drops_whole_samples_before_the_norm_in_training():
    """DVMSR's released block applies stochastic depth to its input: a dropped sample sees zeros, so its output is
    the mixer of the norm's bias, the same at every token position."""
    torch.manual_seed(0)
    block = MambaBlock(8, Mamba(8, d_state=4, backend="torch"), drop_path=1.0, residual=False).train()
    out = block(_mamba_input())
    torch.testing.assert_close(out, block.mixer(block.norm(torch.zeros(2, 10, 8))))


def test_cuda_packages_are_imported_lazily(tmp_path):
    """Importing raykd.models (and building a Mamba) must not import mamba_ssm / causal_conv1d; only asking for
    the kernels does. Stand-in packages record their import, so the test means something without CUDA."""
    for package in ("mamba_ssm", "causal_conv1d"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("import builtins\nbuiltins.IMPORTED = True\n")
    code = (
        "import builtins, sys; sys.path.insert(0, sys.argv[1]); builtins.IMPORTED = False\n"
        "import raykd.models\nfrom raykd.models.ssm import Mamba\nMamba(8)\nbefore = builtins.IMPORTED\n"
        "from raykd.models.ops import cuda_kernels_available\ncuda_kernels_available()\n"
        "print(before, builtins.IMPORTED)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
