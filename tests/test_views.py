from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from raykd.data.classification import ImageFolder
from raykd.data.views import LowResolution, View, ViewDataset, ViewPlan

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _reference_view(img: np.ndarray, plan: ViewPlan, view: View, crop: tuple[int, int]) -> np.ndarray:
    """Pad with zeros, crop, mirror: numpy's version of a view, for comparison."""
    p = plan.padding
    padded = np.pad(img, ((0, 0), (p, p), (p, p)))
    out = padded[:, view.top:view.top + crop[0], view.left:view.left + crop[1]]
    return out[..., ::-1] if view.flip else out


def test_views_are_deterministic_functions_of_seed_index_k():
    plan = ViewPlan(seed=3, num_views=4, crop=24, padding=4, flip=True)
    again = ViewPlan(seed=3, num_views=4, crop=(24, 24), padding=4, flip=True)
    views = [plan.view(i, k, 32) for i in range(50) for k in range(4)]
    assert views == [again.view(i, k, 32) for i in range(50) for k in range(4)]
    assert len({(v.top, v.left, v.flip) for v in views}) > 50  # views differ across samples and k
    assert {v.flip for v in views} == {True, False}
    assert all(0 <= v.top <= 16 and 0 <= v.left <= 16 for v in views)
    other_seed = [ViewPlan(seed=4, num_views=4, crop=24, padding=4, flip=True).view(i, k, 32)
                  for i in range(50) for k in range(4)]
    assert other_seed != views
    assert [plan.view_for_epoch(e) for e in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    with pytest.raises(ValueError, match="k=4"):
        plan.view(0, 4, 32)
    with pytest.raises(ValueError, match="does not fit"):
        ViewPlan(crop=48).view(0, 0, 32)


def test_default_plan_is_the_identity_view():
    plan = ViewPlan()
    img = torch.rand(3, 7, 9)
    view = plan.view(5, 0, (7, 9))
    assert (view.top, view.left, view.flip) == (0, 0, False)
    assert torch.equal(plan.apply(img, view), img)


def test_apply_pads_crops_and_flips_like_numpy():
    plan = ViewPlan(seed=1, num_views=3, crop=(6, 8), padding=2, flip=True)
    img = torch.rand(3, 10, 12)
    for i in range(20):
        for k in range(3):
            view = plan.view(i, k, (10, 12))
            expected = _reference_view(img.numpy(), plan, view, (6, 8))
            np.testing.assert_array_equal(plan.apply(img, view).numpy(), expected)
    batch = torch.rand(2, 3, 10, 12)  # leading dimensions pass through
    view = plan.view(0, 1, (10, 12))
    assert torch.equal(plan.apply(batch, view)[1], plan.apply(batch[1], view))


def test_to_dict_is_json_stable_and_distinguishes_plans():
    a = ViewPlan(seed=1, num_views=2, crop=24, padding=4, flip=True, align=4)
    b = ViewPlan(seed=1, num_views=2, crop=(24, 24), padding=4, flip=True, align=4)
    assert json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)
    assert json.loads(json.dumps(a.to_dict())) == a.to_dict()
    variants = [ViewPlan(seed=2, num_views=2, crop=24, padding=4, flip=True, align=4),
                ViewPlan(seed=1, num_views=3, crop=24, padding=4, flip=True, align=4),
                ViewPlan(seed=1, num_views=2, crop=20, padding=4, flip=True, align=4),
                ViewPlan(seed=1, num_views=2, crop=24, padding=2, flip=True, align=4),
                ViewPlan(seed=1, num_views=2, crop=24, padding=4, flip=False, align=4),
                ViewPlan(seed=1, num_views=2, crop=24, padding=4, flip=True, align=1)]
    assert all(v.to_dict() != a.to_dict() for v in variants)


def _pil_bicubic(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-channel float32 bicubic resize with Pillow (antialiased when reducing)."""
    chans = [np.asarray(Image.fromarray(c.numpy(), mode="F").resize((size[1], size[0]), Image.Resampling.BICUBIC))
             for c in img]
    return torch.from_numpy(np.stack(chans)).clamp(0, 1)


def test_low_resolution_matches_pillow_bicubic():
    hr = torch.rand(3, 32, 24)
    lr = LowResolution(4)(hr)
    assert lr.shape == (3, 8, 6)
    torch.testing.assert_close(lr, _pil_bicubic(hr, (8, 6)), atol=1e-4, rtol=0)
    down_up = LowResolution(4, mode="down_up")(hr)
    assert down_up.shape == hr.shape
    torch.testing.assert_close(down_up, _pil_bicubic(_pil_bicubic(hr, (8, 6)), (32, 24)), atol=1e-4, rtol=0)
    assert LowResolution(2)(hr[None]).shape == (1, 3, 16, 12)
    with pytest.raises(ValueError, match="down_up"):
        LowResolution(2, mode="up")


def test_lr_view_of_hr_view_equals_view_of_lr_image():
    s = 4
    hr = torch.rand(3, 48, 48)
    lower = LowResolution(s)
    # flips commute exactly with the symmetric bicubic kernel
    flip_plan = ViewPlan(num_views=2, flip=True)
    for i in range(6):
        view = flip_plan.view(i, 1, 48)
        torch.testing.assert_close(lower(flip_plan.apply(hr, view)), flip_plan.apply(lower(hr), view, scale=s))
    # crops agree away from the crop border, where the kernel (2 LR pixels wide each side) sees the same pixels
    plan = ViewPlan(seed=7, num_views=3, crop=32, flip=True, align=s)
    tops = set()
    for i in range(6):
        view = plan.view(i, i % 3, 48)
        tops.add(view.top)
        assert view.top % s == 0 and view.left % s == 0
        lr_of_view = lower(plan.apply(hr, view))
        view_of_lr = plan.apply(lower(hr), view, scale=s)
        assert lr_of_view.shape == view_of_lr.shape == (3, 8, 8)
        torch.testing.assert_close(lr_of_view[:, 2:-2, 2:-2], view_of_lr[:, 2:-2, 2:-2])
    assert len(tops) > 1
    unaligned = ViewPlan(seed=0, num_views=1, crop=30, padding=2)
    with pytest.raises(ValueError, match="align=4"):
        unaligned.apply(lower(hr), unaligned.view(0, 0, 48), scale=s)


@pytest.fixture
def folder(tmp_path) -> ImageFolder:
    rng = np.random.default_rng(0)
    for j in range(6):
        path = tmp_path / "train" / f"c{j % 2}" / f"{j}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 14, 3), dtype=np.uint8)).save(path)
    return ImageFolder(tmp_path, "train")


def test_view_dataset_items_follow_plan_and_epoch(folder):
    plan = ViewPlan(seed=2, num_views=3, crop=12, padding=2, flip=True, align=2)
    ds = ViewDataset(folder, plan, 16, MEAN, STD, lr=LowResolution(2))
    assert ds.cache is not None and len(ds) == 6
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(6):
            item = ds[i]
            k = epoch % 3
            assert (item["index"], item["view"], item["label"]) == (i, k, folder.label(i))
            resized = np.asarray(folder.image(i).resize((16, 16), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
            expected = _reference_view(resized / 255.0, plan, plan.view(i, k, 16), (12, 12))
            hr = item["hr"] * std + mean
            np.testing.assert_allclose(hr.numpy(), expected, atol=1e-5)
            torch.testing.assert_close(item["lr"] * std + mean, LowResolution(2)(hr), atol=1e-5, rtol=0)
    ds.set_epoch(3)
    assert torch.equal(ds[1]["hr"], ds.get(1, 0)["hr"])
    assert not torch.equal(ds.get(1, 0)["hr"], ds.get(1, 1)["hr"])
    assert "lr" not in ViewDataset(folder, plan, 16, MEAN, STD)[0]


def test_view_dataset_without_cache_and_in_dataloader_workers(folder):
    plan = ViewPlan(seed=0, num_views=2, crop=12, padding=2, flip=True, align=2)
    cached = ViewDataset(folder, plan, 16, MEAN, STD, lr=LowResolution(2, "down_up"))
    uncached = ViewDataset(folder, plan, 16, MEAN, STD, lr=LowResolution(2, "down_up"), cache_bytes=0)
    assert uncached.cache is None
    cached.set_epoch(1)
    uncached.set_epoch(1)
    for i in range(6):
        a, b = cached[i], uncached[i]
        assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
    clone = pickle.loads(pickle.dumps(cached))
    assert torch.equal(clone[2]["lr"], cached[2]["lr"])
    serial = next(iter(DataLoader(cached, batch_size=6)))
    parallel = torch.cat([b["hr"] for b in DataLoader(cached, batch_size=3, num_workers=2)])
    assert torch.equal(parallel, serial["hr"])
    assert serial["view"].tolist() == [1] * 6 and serial["lr"].shape == (6, 3, 12, 12)
