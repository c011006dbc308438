"""Replayable views (raykd.data.views) and the batches built from them (raykd.data.batches).

Every batched operation is compared, exactly, with a per-item reference written here from the documented
recipe (uniforms -> offsets -> pad, crop, flip, turn), over many samples and views.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from raykd.config import DataConfig
from raykd.data.arrays import ImageArrays, PairArrays
from raykd.data.batches import ClassificationBatches, SRBatches
from raykd.data.store import Ragged
from raykd.data.views import CropFlip, LowResolution, PatchViews, ResizedCrop, normalise, uniforms

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ uniforms


def test_uniforms_are_a_deterministic_function_of_seed_index_and_view():
    index = np.arange(1000) * 7
    a = uniforms(3, index, 5, 4)
    assert a.shape == (1000, 4) and a.dtype == np.float64
    assert np.array_equal(a, uniforms(3, index.copy(), np.full(1000, 5), 4))  # a scalar view broadcasts
    assert ((a >= 0) & (a < 1)).all()
    # draw d of a (sample, view) does not depend on how many draws were asked for, nor on the other samples
    assert np.array_equal(uniforms(3, index, 5, 2), a[:, :2])
    assert np.array_equal(uniforms(3, index[::-1], 5, 4), a[::-1])
    assert np.array_equal(uniforms(3, index[17:18], 5, 4), a[17:18])


def test_changing_seed_index_or_view_changes_every_draw():
    rng = np.random.default_rng(0)
    seed, index, view = 11, rng.integers(0, 10**6, 5000), rng.integers(0, 1000, 5000)
    base = uniforms(seed, index, view, 3)
    for other in (uniforms(seed + 1, index, view, 3), uniforms(seed, index + 1, view, 3),
                  uniforms(seed, index, view + 1, 3)):
        assert not np.isclose(other, base, rtol=0, atol=1e-12).any()
    # the hash is not symmetric in its arguments: (index a, view b) is not (index b, view a)
    assert not np.isclose(uniforms(seed, view, index, 3), base, rtol=0, atol=1e-12).any()
    assert len(np.unique(base)) == base.size
    # all draws of all views of one sample are distinct (a view number cannot stand in for a draw number)
    one = uniforms(seed, np.zeros(4096, dtype=np.int64), np.arange(4096), 8)
    assert len(np.unique(one)) == one.size
    one = uniforms(seed, np.arange(4096), 0, 8)
    assert len(np.unique(one)) == one.size


def _chi2(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def _chi2_limit(dof: int) -> float:
    return dof + 6 * np.sqrt(2 * dof)  # mean + 6 sd: a false alarm about once in 10^9 runs


def test_uniforms_look_uniform_and_independent_across_draws_samples_views_and_seeds():
    n, bins = 200_000, 50
    index = np.arange(n)
    u = uniforms(0, index, 0, 3)
    for d in range(3):  # each draw is uniform
        assert _chi2(np.bincount((u[:, d] * bins).astype(int), minlength=bins)) < _chi2_limit(bins - 1)
    neighbours = {
        "draw 0 vs draw 1": (u[:, 0], u[:, 1]),
        "sample i vs i + 1": (u[:-1, 0], u[1:, 0]),
        "view 0 vs 1": (u[:, 0], uniforms(0, index, 1, 1)[:, 0]),
        "seed 0 vs 1": (u[:, 0], uniforms(1, index, 0, 1)[:, 0]),
    }
    grid = 10
    for what, (x, y) in neighbours.items():
        # pairs of neighbours fill the unit square evenly: a 10 x 10 chi-square
        cells = (x * grid).astype(int) * grid + (y * grid).astype(int)
        assert _chi2(np.bincount(cells, minlength=grid * grid)) < _chi2_limit(grid * grid - 1), what
        assert abs(np.corrcoef(x, y)[0, 1]) < 6 / np.sqrt(len(x)), what
    # and many views of one sample are uniform too (the SR patches of one image over the epochs)
    views = uniforms(5, np.zeros(n, dtype=np.int64), np.arange(n), 1)[:, 0]
    assert _chi2(np.bincount((views * bins).astype(int), minlength=bins)) < _chi2_limit(bins - 1)


def test_uniforms_refuse_negative_arguments():
    for args in ((-1, [0], 0), (0, [-1], 0), (0, [0], -1)):
        with pytest.raises(ValueError, match=">= 0"):
            uniforms(*args, 2)


# ----------------------------------------------------------------------------- classification: CropFlip


def _offsets(seed: int, index: np.ndarray, view: int, padding: int, flip: bool):
    """The documented draws: top and left uniform over the 2p + 1 positions, a mirror with probability 1/2."""
    u = uniforms(seed, index, view, 3)
    room = 2 * padding + 1
    return np.floor(u[:, 0] * room).astype(int), np.floor(u[:, 1] * room).astype(int), (u[:, 2] < 0.5) & flip


def _crop_flip_reference(img: np.ndarray, top: int, left: int, mirror: bool, size: int, padding: int) -> torch.Tensor:
    """One uint8 HxWx3 image: zero-pad, crop, mirror, as uint8 (3, S, S)."""
    padded = np.pad(img, ((padding, padding), (padding, padding), (0, 0)))
    out = padded[top:top + size, left:left + size]
    if mirror:
        out = out[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("gather", [False, True], ids=["slices", "gather"])  # the CPU's method, an accelerator's
@pytest.mark.parametrize(("size", "padding", "flip"), [(12, 4, True), (9, 2, True), (8, 3, False), (6, 0, True)])
def test_crop_flip_batch_equals_the_per_item_reference(size, padding, flip, gather):
    n, seed = 48, 7
    images = _images(n, size)
    index = np.arange(n) * 3 + 1  # sample ids are not batch positions
    views = CropFlip(seed, size, padding, flip)
    tops, mirrors = set(), set()
    for view in range(6):
        top, left, mirror = _offsets(seed, index, view, padding, flip)
        drawn = views.draw(index, view)
        assert all(np.array_equal(a, b) for a, b in zip(drawn, (top, left, mirror)))
        out = views.apply(torch.from_numpy(images), index, view, gather=gather)
        assert out.shape == (n, 3, size, size) and out.dtype == torch.uint8
        for b in range(n):
            expected = _crop_flip_reference(images[b], top[b], left[b], mirror[b], size, padding)
            assert torch.equal(out[b], expected), (view, b)
        tops.update(top.tolist())
        mirrors.update(mirror.tolist())
    assert tops == set(range(2 * padding + 1))  # every offset occurs
    assert mirrors == ({False, True} if flip else {False})


def test_crop_flip_switches_keep_the_crops_and_check_the_size():
    images = torch.from_numpy(_images(16, 10))
    index = np.arange(16)
    with_flip, without = CropFlip(1, 10, 3, True), CropFlip(1, 10, 3, False)
    a, b = with_flip.draw(index, 2), without.draw(index, 2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and not b[2].any() and a[2].any()
    mirrored = a[2]
    x, y = with_flip.apply(images, index, 2), without.apply(images, index, 2)
    assert torch.equal(x[~torch.from_numpy(mirrored)], y[~torch.from_numpy(mirrored)])
    assert torch.equal(x[torch.from_numpy(mirrored)], y[torch.from_numpy(mirrored)].flip(-1))
    assert with_flip.describe() != without.describe() != CropFlip(2, 10, 3, False).describe()
    with pytest.raises(ValueError, match="images are 10x10; these views crop 12x12"):
        CropFlip(1, 12).apply(images, index, 0)


def _pil_bicubic(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-channel float32 bicubic resize with Pillow (antialiased when reducing), (C, H, W)."""
    chans = [np.asarray(Image.fromarray(c.numpy(), mode="F").resize((size[1], size[0]), Image.Resampling.BICUBIC))
             for c in img]
    return torch.from_numpy(np.stack(chans)).clamp(0, 1)


def test_low_resolution_matches_pillow_bicubic():
    hr = torch.rand(2, 3, 32, 24)
    lr = LowResolution(4)(hr)
    assert lr.shape == (2, 3, 8, 6)
    for b in range(2):
        torch.testing.assert_close(lr[b], _pil_bicubic(hr[b], (8, 6)), atol=1e-4, rtol=0)
    down_up = LowResolution(4, mode="down_up")(hr)
    assert down_up.shape == hr.shape
    torch.testing.assert_close(down_up[1], _pil_bicubic(_pil_bicubic(hr[1], (8, 6)), (32, 24)), atol=1e-4, rtol=0)
    assert 0 <= down_up.min() and down_up.max() <= 1
    with pytest.raises(ValueError, match="down_up"):
        LowResolution(2, mode="up")
    with pytest.raises(ValueError, match="factor=0"):
        LowResolution(0)
    with pytest.raises(ValueError, match="smaller than the LR factor 8"):
        LowResolution(8)(torch.rand(1, 3, 4, 16))


def _image_arrays(n: int = 24, size: int = 16, classes: int = 5) -> ImageArrays:
    labels = np.random.default_rng(1).integers(0, classes, n)
    return ImageArrays(_images(n, size, seed=2), labels, tuple(f"c{i}" for i in range(classes)), "ab" * 32)


@pytest.mark.parametrize("lr_mode", ["down", "down_up"])
def test_classification_batches_equal_per_item_views_and_low_resolution(lr_mode):
    arrays = _image_arrays()
    data = DataConfig(image_size=16, crop_padding=2, lr_factor=4, lr_mode=lr_mode)
    batches = ClassificationBatches(arrays, data, seed=5)
    lower = LowResolution(4, lr_mode)
    indices = np.array([3, 17, 0, 9, 9, 22, 11, 5])
    for view in (0, 1, 4):
        out = batches.batch(indices, view, CPU, inputs=("hr", "lr"))
        assert out["view"] == view and np.array_equal(out["index"], indices)
        assert torch.equal(out["label"], torch.from_numpy(arrays.labels[indices]))
        side = 4 if lr_mode == "down" else 16
        assert out["hr"].shape == (8, 3, 16, 16) and out["lr"].shape == (8, 3, side, side)
        top, left, mirror = _offsets(5, indices, view, 2, True)
        for b, i in enumerate(indices):
            x = _crop_flip_reference(arrays.images[i], top[b], left[b], mirror[b], 16, 2)[None]
            assert torch.equal(out["hr"][b], normalise(x)[0])
            assert torch.equal(out["lr"][b], normalise(lower(x.float() / 255.0))[0]), (view, b)
    assert set(batches.batch(indices, 0, CPU)) == {"hr", "index", "view", "label"}  # no LR unless asked
    assert set(batches.batch(indices, 0, CPU, inputs=("lr",))) == {"lr", "index", "view", "label"}


def test_evaluation_batches_are_the_images_themselves():
    arrays = _image_arrays()
    batches = ClassificationBatches(arrays, DataConfig(image_size=16), seed=5, views=False)
    out = batches.batch(np.arange(6), 3, CPU)
    expected = torch.from_numpy(arrays.images[:6]).permute(0, 3, 1, 2)
    assert torch.equal(out["hr"], normalise(expected))
    assert batches.describe()["views"] is None and ClassificationBatches(arrays, DataConfig(image_size=16), 5
                                                                         ).describe()["views"] == "crop_flip"


def test_normalise_uses_imagenet_statistics():
    x = torch.rand(2, 3, 4, 4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(normalise(x), (x - mean) / std)


def test_fresh_views_every_epoch_and_reused_views_replay():
    arrays = _image_arrays()
    indices = np.arange(len(arrays))
    fresh, reuse = DataConfig(image_size=16), DataConfig(image_size=16, reuse_views=3)
    assert [fresh.view_for_epoch(e) for e in range(7)] == list(range(7))
    assert [reuse.view_for_epoch(e) for e in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    for data in (fresh, reuse):
        batches = ClassificationBatches(arrays, data, seed=0)
        epochs = [batches.batch(indices, data.view_for_epoch(e), CPU)["hr"] for e in range(6)]
        for e in range(6):
            for f in range(e + 1, 6):
                same = torch.equal(epochs[e], epochs[f])
                assert same == (data.reuse_views is not None and (f - e) % data.reuse_views == 0), (e, f)


# ------------------------------------------------------------------------------------ super-resolution


def _mean_pairs(scale: int, sizes: list[tuple[int, int]], seed: int = 0) -> PairArrays:
    """LR images that are exactly the s x s block means of their HR images: HR blocks are LR plus a zero-mean
    pattern, so a patch pair averages exactly only when aligned under every flip and turn."""
    rng = np.random.default_rng(seed)
    lrs, hrs = [], []
    for h, w in sizes:
        lr = rng.integers(40, 216, (h, w, 3)).astype(np.int16)
        pattern = rng.integers(-20, 21, (h, w, scale, scale, 3))
        pattern -= np.rint(pattern.mean(axis=(2, 3), keepdims=True)).astype(pattern.dtype)
        pattern[:, :, -1, -1] -= pattern.sum(axis=(2, 3))  # zero-sum blocks
        hr = (lr[:, :, None, None] + pattern).transpose(0, 2, 1, 3, 4).reshape(h * scale, w * scale, 3)
        lrs.append(lr.astype(np.uint8))
        hrs.append(hr.astype(np.uint8))
    return PairArrays(Ragged.from_rows(lrs), Ragged.from_rows(hrs), np.zeros(len(sizes), bool),
                      tuple(f"img{i}" for i in range(len(sizes))), scale, "cd" * 32)


def _patch_reference(img: np.ndarray, top: int, left: int, size: int, flip: bool, rot: int) -> torch.Tensor:
    """One HxWxC image: crop the box, mirror its columns, turn it ``rot`` quarter turns (torch.rot90)."""
    out = torch.from_numpy(np.ascontiguousarray(img[top:top + size, left:left + size])).permute(2, 0, 1)
    if flip:
        out = out.flip(-1)
    return torch.rot90(out, rot, dims=(-2, -1))


SIZES = [(14, 18), (12, 12), (9, 20), (16, 10)]


@pytest.mark.parametrize(("scale", "patch", "repeat"), [(2, 5, 2), (3, 4, 1), (4, 9, 3)])
def test_sr_batches_equal_per_item_aligned_patches(scale, patch, repeat):
    arrays = _mean_pairs(scale, SIZES)
    seed = 9
    data = DataConfig(task="sr", dataset="paired", scale=scale, patch_size=patch, patches_per_image=repeat)
    batches = SRBatches(arrays, data, seed)
    assert len(batches) == len(SIZES) * repeat
    orientations = set()
    for epoch in range(8):
        view = data.view_for_epoch(epoch)
        items = np.random.default_rng(epoch).permutation(len(batches))
        out = batches.batch(items, view, CPU)
        image, k = items // repeat, view * repeat + items % repeat
        assert np.array_equal(out["index"], image) and np.array_equal(out["view"], k)
        assert out["lr"].shape == (len(items), 3, patch, patch)
        assert out["hr"].shape == (len(items), 3, patch * scale, patch * scale)
        u = uniforms(seed, image, k, 4)
        for b in range(len(items)):
            h, w = SIZES[image[b]]
            top, left = int(u[b, 0] * (h - patch + 1)), int(u[b, 1] * (w - patch + 1))
            flip, rot = bool(u[b, 2] < 0.5), int(u[b, 3] * 4)
            assert out["box"][b].tolist() == [top, left, patch, int(flip), rot]
            lr = _patch_reference(arrays.lr[image[b]], top, left, patch, flip, rot)
            hr = _patch_reference(arrays.hr[image[b]], top * scale, left * scale, patch * scale, flip, rot)
            assert torch.equal(out["lr"][b], lr.float() / 255.0)
            assert torch.equal(out["hr"][b], hr.float() / 255.0)
            orientations.add((flip, rot))
        # independent of the reference: aligned HR patches average to their LR patches exactly
        hr255 = torch.round(out["hr"] * 255).double()
        means = torch.nn.functional.avg_pool2d(hr255, scale)
        assert torch.equal(means, torch.round(out["lr"] * 255).double())
    assert orientations == {(f, r) for f in (False, True) for r in range(4)}


def test_whole_image_teacher_rows_cut_to_the_patches():
    scale, patch = 2, 6
    arrays = _mean_pairs(scale, SIZES, seed=1)
    data = DataConfig(task="sr", dataset="paired", scale=scale, patch_size=patch, patches_per_image=2)
    batches = SRBatches(arrays, data, seed=4)
    rng = np.random.default_rng(3)
    # teacher outputs on whole LR images: (C, sH, sW) float16 rows, stored as a ragged column
    whole = [rng.standard_normal((3, h * scale, w * scale)).astype(np.float16) for h, w in SIZES]
    rows = Ragged.from_rows(whole)
    for view in range(5):
        items = np.arange(len(batches))
        out = batches.batch(items, view, CPU)
        boxes = out["box"]
        cut = PatchViews.crop(rows.take(out["index"]), boxes, scale, channels_last=False)
        assert cut.shape == (len(items), 3, patch * scale, patch * scale)
        teacher = PatchViews.orient(torch.from_numpy(cut), boxes)
        for b, i in enumerate(out["index"]):
            top, left, size, flip, rot = boxes[b].tolist()
            src = whole[i][:, top * scale:(top + size) * scale, left * scale:(left + size) * scale]
            expected = torch.from_numpy(np.ascontiguousarray(src))
            expected = torch.rot90(expected.flip(-1) if flip else expected, rot, dims=(-2, -1))
            assert torch.equal(teacher[b], expected)
        # a "teacher" that outputs the HR image itself gives back exactly the HR patches
        hr_rows = [np.ascontiguousarray(arrays.hr[i].transpose(2, 0, 1)) for i in range(len(SIZES))]
        hr_cut = PatchViews.crop([hr_rows[i] for i in out["index"]], boxes, scale, channels_last=False)
        assert torch.equal(PatchViews.orient(torch.from_numpy(hr_cut), boxes).float() / 255.0, out["hr"])


def test_sr_switches_keep_the_crops_and_bad_boxes_are_named():
    lr_sizes = np.array(SIZES)
    image, view = np.arange(4), np.full(4, 3)
    on = PatchViews(2, 5, 2).draw(image, view, lr_sizes)
    off = PatchViews(2, 5, 2, flip=False, rot90=False).draw(image, view, lr_sizes)
    assert np.array_equal(on[:, :3], off[:, :3]) and not off[:, 3:].any()
    with pytest.raises(ValueError, match=r"LR patch 13x13 does not fit image 1 of 12x12"):
        PatchViews(0, 13, 2).draw(image, view, lr_sizes)
    with pytest.raises(ValueError, match="exceeds the 10x10 image"):
        PatchViews.crop([np.zeros((3, 10, 10))], np.array([[4, 0, 4, 0, 0]]), 2, channels_last=False)


def test_sr_epochs_draw_fresh_patches_and_reuse_replays_them():
    arrays = _mean_pairs(2, SIZES)
    items = np.arange(len(SIZES) * 2)
    for reuse in (None, 2):
        data = DataConfig(task="sr", dataset="paired", scale=2, patch_size=5, patches_per_image=2, reuse_views=reuse)
        batches = SRBatches(arrays, data, seed=0)
        boxes = [batches.batch(items, data.view_for_epoch(e), CPU)["box"] for e in range(4)]
        assert not np.array_equal(boxes[0], boxes[1])
        assert np.array_equal(boxes[0], boxes[2]) == (reuse == 2)
        views = [batches.batch(items, data.view_for_epoch(e), CPU)["view"] for e in range(4)]
        assert len({tuple(v) for v in views}) == (2 if reuse else 4)
    # the whole LR image a teacher is run on
    whole = SRBatches(arrays, DataConfig(task="sr", dataset="paired", scale=2, patch_size=5), 0).whole(2, CPU)
    assert torch.equal(whole[0], torch.from_numpy(np.array(arrays.lr[2])).permute(2, 0, 1).float() / 255.0)


# ------------------------------------------------------------------------------------------------ resized crops


def _resized_reference(image: torch.Tensor, top: int, left: int, h: int, w: int, mirrored: bool, size: int):
    """One sample by hand: crop the box, F.interpolate it (bilinear, align_corners=False), mirror, round."""
    box = image[top:top + h, left:left + w].permute(2, 0, 1)[None].float()
    out = F.interpolate(box, size=(size, size), mode="bilinear", align_corners=False)[0]
    return (out.flip(-1) if mirrored else out).round().clamp(0, 255).to(torch.uint8)


def test_resized_crops_replay_from_seed_sample_and_view_alone():
    views, index = ResizedCrop(seed=5, size=24), np.arange(300) * 3
    first = views.draw(index, 7, 48, 40)
    again = ResizedCrop(seed=5, size=24).draw(index.copy(), 7, 48, 40)  # another process: same draws
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    alone = views.draw(index[41:42], 7, 48, 40)  # a sample's view does not depend on its batch
    assert all(np.array_equal(a[41:42], b) for a, b in zip(first, alone))
    other = views.draw(index, 8, 48, 40)
    assert (first[2] != other[2]).mean() > 0.9  # the next view (epoch) draws new boxes
    top, left, h, w, _ = first
    assert ((top >= 0) & (left >= 0) & (top + h <= 48) & (left + w <= 40)).all()
    area = h * w / (48 * 40)
    assert area.min() >= 0.07 and area.max() <= 1.0 and ((w / h >= 0.7) & (w / h <= 1.4)).all()


def test_resized_crops_of_a_batch_equal_each_samples_crop_and_interpolate():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 32, 28, 3), generator=g, dtype=torch.uint8)
    views, index = ResizedCrop(seed=1, size=16, scale=(0.2, 1.0)), np.arange(64) + 100
    out = views.apply(images, index, 3)
    assert out.shape == (64, 3, 16, 16) and out.dtype == torch.uint8
    draws = views.draw(index, 3, 32, 28)
    assert draws[4].any() and not draws[4].all()  # both mirrored and plain samples are checked
    for i in range(64):
        ref = _resized_reference(images[i], *(int(d[i]) for d in draws[:4]), bool(draws[4][i]), 16)
        assert (out[i].int() - ref.int()).abs().max() <= 1  # float rounding at .5 levels at most
    assert torch.equal(out, views.apply(images.clone(), index, 3))  # replayed exactly
    assert ResizedCrop(seed=1, size=16).describe() != ResizedCrop(seed=1, size=16, scale=(0.5, 1.0)).describe()


def test_resized_crops_fall_back_to_the_centred_box_and_refuse_bad_ranges():
    # no drawn box fits a ratio far outside the image's: torchvision's fallback, the whole clamped image, centred
    top, left, h, w, _ = ResizedCrop(seed=0, size=8, ratio=(4.0, 5.0), attempts=1).draw(np.arange(50), 0, 40, 40)
    fell = (w > 0) & (h == 10)
    assert fell.any() and (left[fell] == 0).all() and (top[fell] == 15).all() and (w[fell] == 40).all()
    with pytest.raises(ValueError, match="scale"):
        ResizedCrop(seed=0, size=8, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="ratio"):
        ResizedCrop(seed=0, size=8, ratio=(2.0, 1.0))


def test_classification_batches_with_resized_crops_equal_the_per_sample_reference():
    arrays = _image_arrays(size=16)
    data = DataConfig(image_size=16, crop="resized", crop_scale=(0.25, 1.0), crop_ratio=(0.5, 2.0))
    batches = ClassificationBatches(arrays, data, seed=5)
    reference = ResizedCrop(5, 16, (0.25, 1.0), (0.5, 2.0))
    indices = np.array([3, 17, 0, 9, 9, 22, 11, 5])
    images = torch.from_numpy(arrays.images)
    for view in (0, 2):
        out = batches.batch(indices, view, CPU)
        draws = reference.draw(indices, view, 16, 16)
        for b, i in enumerate(indices):
            crop = _resized_reference(images[i], *(int(d[b]) for d in draws[:4]), bool(draws[4][b]), 16)
            # the batch rounds each level like the reference, up to one level at an exact .5
            assert (out["hr"][b] - normalise(crop[None])[0]).abs().max() <= 1.01 / (255 * 0.224), (view, b)
    # the views differ from the padded crop's, and so do the content keys of their teacher outputs
    padded = ClassificationBatches(arrays, DataConfig(image_size=16), seed=5)
    assert not torch.equal(padded.batch(indices, 0, CPU)["hr"], batches.batch(indices, 0, CPU)["hr"])
    assert batches.describe()["views"] == "resized_crop" and padded.describe()["views"] == "crop_flip"
    assert batches.describe() != ClassificationBatches(arrays, DataConfig(image_size=16, crop="resized"), 5).describe()
    # the padded crop's key is what it was before crop= existed (stored teacher outputs stay valid)
    assert padded.describe() == {"data": arrays.key, "views": "crop_flip", "format": 2, "seed": 5, "size": 16,
                                 "padding": 4, "flip": True, "normalise": "imagenet"}


def test_data_config_checks_the_crop_fields_and_loads_old_json():
    from raykd.config import ConfigError, from_json, to_json

    with pytest.raises(ConfigError, match=r"data\.crop = 'random'"):
        DataConfig(crop="random")
    for bad in ((0.0, 1.0), (0.5, 0.2), (0.5, 1.5), (0.5,), "0.5", (True, 1.0)):
        with pytest.raises(ConfigError, match=r"data\.crop_scale"):
            DataConfig(crop_scale=bad)
    for bad in ((0.0, 1.0), (2.0, 1.0), (1.0, float("inf"))):
        with pytest.raises(ConfigError, match=r"data\.crop_ratio"):
            DataConfig(crop_ratio=bad)
    resized = DataConfig(crop="resized", crop_scale=[0.35, 1], crop_ratio=(1, 1))
    assert resized.crop_scale == (0.35, 1) and from_json(DataConfig, to_json(resized)) == resized
    old = to_json(DataConfig(image_size=64))
    for key in ("crop", "crop_scale", "crop_ratio"):
        del old[key]
    loaded = from_json(DataConfig, old)  # a config written before these fields: today's padded crop
    assert (loaded.crop, loaded.crop_scale, loaded.crop_ratio) == ("pad", (0.08, 1.0), (3 / 4, 4 / 3))
