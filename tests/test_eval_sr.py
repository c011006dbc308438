"""``raykd eval-sr``: the SR papers' table of PSNR/SSIM per benchmark set, on the real Set5."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from raykd.cli import main
from raykd.models import create_model
from raykd.train.checkpoint import save_checkpoint

DVMSR_SET5_X4 = (32.19, 0.8955)  # DVMSR (Lei et al., CVPRW 2024) Table 1, the released student

# Published x4 bicubic baseline on Set5 (Y channel, border = scale), the exact reference the shared data's README names
PUBLISHED_SET5_X4 = (28.42, 0.8104)
TINY = {"n_resblocks": 1, "n_feats": 8}


def _table(out: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``{row label: {set name: (psnr, ssim)}}`` from the printed markdown table."""
    lines = [line for line in out.splitlines() if line.startswith("|") and not line.startswith("|---")]
    sets = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    rows = {}
    for line in lines[1:]:
        label, *cells = [c.strip() for c in line.strip("|").split("|")]
        rows[label] = {s: tuple(float(v) for v in cell.split("/")) for s, cell in zip(sets, cells)}
    return rows


def _y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr luma of a uint8 RGB image, rounded to uint8 levels."""
    return np.floor(16.0 + rgb.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0 + 0.5)


def test_bicubic_row_reproduces_the_published_set5_numbers(shared_data, capsys):
    assert main(["eval-sr", "--bicubic", "--set", str(shared_data / "sr" / "Set5"), "--scale", "4"]) == 0
    psnr, ssim = _table(capsys.readouterr().out)["Bicubic"]["Set5"]
    assert psnr == pytest.approx(PUBLISHED_SET5_X4[0], abs=0.005)
    assert ssim == pytest.approx(PUBLISHED_SET5_X4[1], abs=0.0005)


def test_checkpoint_and_official_weights_rows_match_an_independent_measurement(shared_data, capsys, tmp_path):
    torch.manual_seed(0)
    model = create_model("edsr_baseline", scale=4, **TINY).eval()
    ckpt = save_checkpoint(tmp_path / "tiny", model=model,
                           meta={"model": "edsr_baseline", "model_kwargs": {"scale": 4, **TINY}})
    official = tmp_path / "edsr_tiny_x4.pth"
    torch.save({"params_ema": model.state_dict()}, official)  # the BasicSR/KAIR release wrapper
    set5 = shared_data / "sr" / "Set5"
    main(["eval-sr", "--model", str(ckpt), "--bicubic", "--set", str(set5), "--scale", "4", "--tile", "48"])
    rows = _table(capsys.readouterr().out)
    assert set(rows) == {"Bicubic", "tiny"}
    main(["eval-sr", "--model", "edsr_baseline", "--model-kwargs", '{"n_resblocks": 1, "n_feats": 8}',
          "--weights", str(official), "--set", str(set5), "--scale", "4"])
    untiled = _table(capsys.readouterr().out)["edsr_baseline"]["Set5"]

    psnrs, ssims = [], []
    for hr_file in sorted((set5 / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_file).convert("RGB"))
        lr = np.asarray(Image.open(set5 / "LR_bicubic" / "X4" / f"{hr_file.stem}x4.png").convert("RGB"))
        hr = hr[: lr.shape[0] * 4, : lr.shape[1] * 4]
        with torch.no_grad():
            sr = model(torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255)[0]
        sr = np.round(sr.clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64) * 255)
        a, b = _y(sr)[4:-4, 4:-4], _y(hr)[4:-4, 4:-4]
        psnrs.append(peak_signal_noise_ratio(b, a, data_range=255))
        ssims.append(structural_similarity(b, a, data_range=255, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False))
    expected = (np.mean(psnrs), np.mean(ssims))
    for got in (rows["tiny"]["Set5"], untiled):  # tiled (48-pixel tiles) and untiled inference agree
        assert got[0] == pytest.approx(expected[0], abs=0.006)  # printed with 2 decimals
        assert got[1] == pytest.approx(expected[1], abs=6e-4)


def test_released_dvmsr_reproduces_table_1_from_the_command_line(shared_data, capsys):
    """The command the issue names: whole images (untiled, the default), MATLAB-rounded Y (the default)."""
    weights = shared_data / "weights" / "DVMSR.pth"
    assert main(["eval-sr", "--model", "dvmsr", "--weights", str(weights), "--set", str(shared_data / "sr" / "Set5"),
                 "--scale", "4"]) == 0
    printed = capsys.readouterr().out
    psnr, ssim = _table(printed)["dvmsr"]["Set5"]
    assert "whole images" in printed and "matlab luma" in printed
    assert psnr == pytest.approx(DVMSR_SET5_X4[0], abs=0.01)
    assert ssim == pytest.approx(DVMSR_SET5_X4[1], abs=0.0015)


def test_arguments_that_cannot_work_are_refused_with_the_fix(shared_data, tmp_path, capsys):
    set5 = str(shared_data / "sr" / "Set5")
    assert main(["eval-sr", "--set", set5, "--scale", "4"]) == 2
    assert "--model and/or --bicubic" in capsys.readouterr().err
    assert main(["eval-sr", "--model", "edsr_baseline", "--set", set5, "--scale", "4"]) == 2
    assert "give its --weights FILE" in capsys.readouterr().err
    ckpt = save_checkpoint(tmp_path / "x2", model=create_model("edsr_baseline", scale=2, **TINY),
                           meta={"model": "edsr_baseline", "model_kwargs": {"scale": 2, **TINY}})
    assert main(["eval-sr", "--model", str(ckpt), "--set", set5, "--scale", "4"]) == 2
    assert "x2 model, not x4" in capsys.readouterr().err
    bad = tmp_path / "wrong.pth"
    torch.save({"params": create_model("edsr_baseline", scale=4, n_resblocks=2, n_feats=8).state_dict()}, bad)
    assert main(["eval-sr", "--model", "edsr_baseline", "--model-kwargs", '{"n_resblocks": 1, "n_feats": 8}',
                 "--weights", str(bad), "--set", set5, "--scale", "4"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "unexpected" in err
