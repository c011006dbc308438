"""Replayable augmentation, computed for a whole batch as tensor ops on the training device.

A view of a sample is drawn from (seed, sample index, view number) alone, by a counter-based hash
(:func:`uniforms`: SplitMix64's finaliser, Steele, Lea & Flood 2014), so the teacher service, a trial and a
restarted trial in other processes draw the same view without sharing any state, and a batch's views are drawn
in one vectorised numpy call. Epoch ``e`` trains on view ``e`` (``DataConfig.view_for_epoch``).

* Classification (:class:`CropFlip`): the image, resized to ``size`` when decoded, zero-padded by ``padding``, a
  ``size`` crop at a drawn offset, mirrored with probability 1/2 when ``flip`` (the CIFAR / TinyImageNet KD recipe).
  The crop of a whole uint8 batch is one gather, its flips one more; :func:`normalise` and :class:`LowResolution`
  (the LR student input of DFD and ViMD) follow on the same device. :class:`ResizedCrop` is the ImageNet /
  fine-grained recipe instead (torchvision's ``RandomResizedCrop``: a box of a drawn area fraction and aspect
  ratio, resized to ``size``, then the mirror), its resampling a few gathers for the whole batch.
* Super-resolution (:class:`PatchViews`): an LR box of ``patch`` pixels at a drawn position of each image, a
  horizontal flip and a number of quarter turns (BasicSR's paired random crop and ``augment``); the same box times
  the scale is cut from the HR image and from any whole-image teacher output, so LR patch, HR patch and teacher
  patch stay aligned pixel for pixel. Flip and turns of a batch are one gather.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["VIEW_FORMAT", "uniforms", "CropFlip", "ResizedCrop", "LowResolution", "PatchViews", "normalise",
           "IMAGENET_MEAN", "IMAGENET_STD"]

# Bumped whenever the way views are drawn or applied changes: stored teacher outputs of old views get new keys.
VIEW_FORMAT = 2
# ImageNet statistics (timm's IMAGENET_DEFAULT_MEAN / _STD), the input convention of every raykd classifier.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, index: np.ndarray, view: np.ndarray | int, count: int) -> np.ndarray:
    """``count`` independent uniforms in [0, 1) per (sample, view): shape ``(len(index), count)``, float64, a pure
    function of (seed, index, view), identical on every platform."""
    index = np.asarray(index, dtype=np.int64)
    view = np.broadcast_to(np.asarray(view, dtype=np.int64), index.shape)
    if (index < 0).any() or (view < 0).any() or seed < 0:
        raise ValueError(f"seed, sample indices and view numbers must be >= 0 (seed={seed})")
    with np.errstate(over="ignore"):
        h = _mix(np.full(index.shape, seed, dtype=np.uint64))
        h = _mix(h ^ index.astype(np.uint64))
        h = _mix(h ^ view.astype(np.uint64))
        draws = [_mix(h ^ np.uint64(d + 1)) for d in range(count)]
    return np.stack([(d >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 for d in draws], axis=-1)


def _integers(u: np.ndarray, high: np.ndarray | int) -> np.ndarray:
    """Integers in ``[0, high)`` from uniforms ``u``."""
    return np.minimum(np.floor(u * high).astype(np.int64), np.asarray(high) - 1)


@dataclass(frozen=True)
class CropFlip:
    """Classification views: a ``size`` crop of the image zero-padded by ``padding``, then a mirror if drawn."""

    seed: int
    size: int
    padding: int = 4
    flip: bool = True

    def draw(self, index: np.ndarray, view: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(top, left, mirrored)`` per sample (top/left in the padded image). All three draws happen whatever
        ``flip`` says, so turning it off does not move the crops."""
        u = uniforms(self.seed, index, view, 3)
        room = 2 * self.padding + 1
        return _integers(u[:, 0], room), _integers(u[:, 1], room), (u[:, 2] < 0.5) & self.flip

    def apply(self, images: Tensor, index: np.ndarray, view: np.ndarray | int, gather: bool | None = None) -> Tensor:
        """The views of a batch: ``images`` uint8 ``(B, size, size, 3)`` (any device) -> uint8 ``(B, 3, size, size)``
        on the same device (channels-last strides on the CPU). ``gather`` picks the method, by default by device:
        on an accelerator one gather from a strided view of every window of the padded batch (one kernel); on the
        CPU one slice copy per sample, measured 2x faster there than the gather (whose reads are strided)."""
        b, h, w, _ = images.shape
        if (h, w) != (self.size, self.size):
            raise ValueError(f"images are {h}x{w}; these views crop {self.size}x{self.size} (decode at that size)")
        top, left, mirrored = self.draw(index, view)
        p = self.padding
        padded = F.pad(images, (0, 0, p, p, p, p)) if p else images
        if gather if gather is not None else images.device.type != "cpu":
            return self._gathered(padded, top, left, mirrored)
        out = torch.empty((b, self.size, self.size, 3), dtype=torch.uint8, device=images.device)
        for i, (t, l, m) in enumerate(zip(top.tolist(), left.tolist(), mirrored.tolist())):
            window = padded[i, t:t + self.size, l:l + self.size]
            out[i] = window.flip(1) if m else window
        return out.permute(0, 3, 1, 2)

    def _gathered(self, padded: Tensor, top: np.ndarray, left: np.ndarray, mirrored: np.ndarray) -> Tensor:
        device = padded.device
        windows = padded.unfold(1, self.size, 1).unfold(2, self.size, 1)  # (B, rows, cols, 3, size, size), no copy
        out = windows[torch.arange(len(padded), device=device), torch.as_tensor(top, device=device),
                      torch.as_tensor(left, device=device)]
        flip = torch.as_tensor(mirrored, device=device)
        out[flip] = out[flip].flip(-1)
        return out

    def describe(self) -> dict[str, Any]:
        """What determines the views, for content keys."""
        return {"views": "crop_flip", "format": VIEW_FORMAT, "seed": self.seed, "size": self.size,
                "padding": self.padding, "flip": self.flip}


@dataclass(frozen=True)
class ResizedCrop:
    """Random-resized-crop views (torchvision's ``RandomResizedCrop``, Szegedy et al. 2015's augmentation, the
    fine-grained recipe of FiGKD's and ViMD's CUB runs): a box covering a fraction in ``scale`` of the image with
    aspect ratio (width / height) log-uniform in ``ratio``, resized to ``size`` x ``size`` (bilinear, no
    antialiasing: ``F.interpolate(mode="bilinear", align_corners=False)`` of the box), mirrored with probability
    1/2 when ``flip``. As torchvision does, ``attempts`` boxes are drawn and the first that fits is taken, else a
    centred box of the image clamped to the ratio range. Every draw comes from (seed, sample, view) alone."""

    seed: int
    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    attempts: int = 10

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"ResizedCrop scale={self.scale}: expected 0 < low <= high <= 1 (e.g. (0.08, 1.0))")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ResizedCrop ratio={self.ratio}: expected 0 < low <= high (e.g. (0.75, 1.333))")

    def draw(self, index: np.ndarray, view: np.ndarray | int, height: int, width: int) -> tuple[np.ndarray, ...]:
        """``(top, left, box_height, box_width, mirrored)`` per sample of ``height`` x ``width`` images."""
        n = self.attempts
        u = uniforms(self.seed, index, view, 2 * n + 3)
        area = u[:, :n] * (self.scale[1] - self.scale[0]) + self.scale[0]
        log_low, log_high = np.log(self.ratio[0]), np.log(self.ratio[1])
        aspect = np.exp(u[:, n:2 * n] * (log_high - log_low) + log_low)
        w = np.rint(np.sqrt(area * height * width * aspect)).astype(np.int64)
        h = np.rint(np.sqrt(area * height * width / aspect)).astype(np.int64)
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first, found = fits.argmax(axis=1), fits.any(axis=1)
        rows = np.arange(len(u))
        h, w = np.where(found, h[rows, first], 0), np.where(found, w[rows, first], 0)
        # torchvision's fallback: the whole image, clamped to the ratio range, centred
        if width / height < self.ratio[0]:
            fh, fw = int(round(width / self.ratio[0])), width
        elif width / height > self.ratio[1]:
            fh, fw = height, int(round(height * self.ratio[1]))
        else:
            fh, fw = height, width
        h, w = np.where(found, h, fh), np.where(found, w, fw)
        top = np.where(found, _integers(u[:, 2 * n], height - h + 1), (height - h) // 2)
        left = np.where(found, _integers(u[:, 2 * n + 1], width - w + 1), (width - w) // 2)
        return top, left, h, w, (u[:, 2 * n + 2] < 0.5) & self.flip

    def apply(self, images: Tensor, index: np.ndarray, view: np.ndarray | int) -> Tensor:
        """The views of a batch: ``images`` uint8 ``(B, H, W, 3)`` (any device) -> uint8 ``(B, 3, size, size)`` on
        the same device: each box's bilinear samples gathered for the whole batch at once (rows, then columns)."""
        b, height, width, _ = images.shape
        top, left, h, w, mirrored = self.draw(index, view, height, width)
        device = images.device
        y0, y1, fy = self._axis(top, h, device)
        x0, x1, fx = self._axis(left, w, device)
        flip = torch.as_tensor(mirrored, device=device)
        x0, x1, fx = (torch.where(flip[:, None], t.flip(1), t) for t in (x0, x1, fx))
        batch = torch.arange(b, device=device)[:, None, None]
        img = images.float()

        def rows(y: Tensor) -> Tensor:  # (B, size, size, 3) at the row y and both column taps, mixed by fx
            left_tap, right_tap = img[batch, y[:, :, None], x0[:, None, :]], img[batch, y[:, :, None], x1[:, None, :]]
            return torch.lerp(left_tap, right_tap, fx[:, None, :, None])

        out = torch.lerp(rows(y0), rows(y1), fy[:, :, None, None])
        return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 3, 1, 2)

    def _axis(self, start: np.ndarray, length: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The two taps and the weight of the second along one axis, for ``size`` outputs over each box
        ``[start, start + length)``: PyTorch's ``upsample_bilinear2d`` (align_corners=False) arithmetic."""
        length_t = torch.as_tensor(length, device=device, dtype=torch.float32)[:, None]
        src = ((torch.arange(self.size, device=device, dtype=torch.float32) + 0.5) * (length_t / self.size) - 0.5)
        src = src.clamp_min_(0)
        lo = src.long()
        last = torch.as_tensor(length, device=device)[:, None] - 1
        lo = torch.minimum(lo, last)
        hi = torch.minimum(lo + 1, last)
        offset = torch.as_tensor(start, device=device)[:, None]
        return offset + lo, offset + hi, src - lo

    def describe(self) -> dict[str, Any]:
        """What determines the views, for content keys."""
        return {"views": "resized_crop", "format": VIEW_FORMAT, "seed": self.seed, "size": self.size,
                "scale": list(self.scale), "ratio": list(self.ratio), "flip": self.flip, "attempts": self.attempts}


def normalise(x: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """``(x - mean) / std`` per channel of a ``(B, C, H, W)`` batch in [0, 1], or of uint8 levels (then divided by
    255 in the same pass), as a new float32 tensor. Channel by channel with scalars: broadcasting a (1, C, 1, 1)
    tensor over the batch is several times slower on CPUs."""
    levels = 255.0 if x.dtype == torch.uint8 else 1.0
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for c, (m, s) in enumerate(zip(mean, std)):
        out[:, c].copy_(x[:, c]).mul_(1.0 / (s * levels)).add_(-m / s)
    return out


@dataclass(frozen=True)
class LowResolution:
    """The LR input made from an HR batch ``(B, C, H, W)`` in [0, 1].

    ``mode="down"``: bicubic downscaling by ``factor`` with antialiasing (PIL's kernel, a = -0.5), to
    (H // factor, W // factor). ``mode="down_up"``: the same, then bicubic back up to (H, W): DFD's
    low-resolution input, which keeps the network's input size. Results are clamped to [0, 1] because
    bicubic overshoots at edges.
    """

    factor: int
    mode: str = "down"

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ValueError(f"LowResolution factor={self.factor}: must be >= 1")
        if self.mode not in ("down", "down_up"):
            raise ValueError(f"LowResolution mode={self.mode!r}: expected 'down' or 'down_up'")

    def __call__(self, hr: Tensor) -> Tensor:
        h, w = hr.shape[-2:]
        if h < self.factor or w < self.factor:
            raise ValueError(f"image of {h}x{w} is smaller than the LR factor {self.factor}")
        x = F.interpolate(hr.float(), size=(h // self.factor, w // self.factor), mode="bicubic", antialias=True,
                          align_corners=False)
        if self.mode == "down_up":
            x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        return x.clamp_(0, 1)


@dataclass(frozen=True)
class PatchViews:
    """Super-resolution views: ``repeat`` LR patches of ``patch`` pixels per image and epoch, flipped and turned.

    Item ``i`` of an epoch is a patch of image ``i // repeat``; in epoch ``e`` it is view ``e * repeat + i % repeat``
    of that image, so every (image, epoch) pair draws fresh patches and none repeats.
    """

    seed: int
    patch: int
    scale: int
    repeat: int = 1
    flip: bool = True
    rot90: bool = True

    def view_numbers(self, items: np.ndarray, epoch_view: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image, view)`` of the epoch's items (``epoch_view``: the epoch's view number)."""
        items = np.asarray(items, dtype=np.int64)
        return items // self.repeat, epoch_view * self.repeat + items % self.repeat

    def draw(self, image: np.ndarray, view: np.ndarray, lr_sizes: np.ndarray) -> np.ndarray:
        """Boxes ``(B, 5)`` int64: ``top, left`` of the LR box, ``size``, ``flip`` (0/1) and ``rot`` quarter turns.
        All four draws happen whatever ``flip``/``rot90`` say, so turning augmentation on does not move the crops."""
        lr_sizes = np.asarray(lr_sizes, dtype=np.int64).reshape(-1, 2)
        small = np.flatnonzero((lr_sizes < self.patch).any(axis=1))
        if small.size:
            i = int(small[0])
            raise ValueError(f"LR patch {self.patch}x{self.patch} does not fit image {int(image[i])} of "
                             f"{lr_sizes[i, 0]}x{lr_sizes[i, 1]}: lower data.patch_size")
        u = uniforms(self.seed, image, view, 4)
        top = _integers(u[:, 0], lr_sizes[:, 0] - self.patch + 1)
        left = _integers(u[:, 1], lr_sizes[:, 1] - self.patch + 1)
        flip = (u[:, 2] < 0.5) & self.flip
        rot = _integers(u[:, 3], 4) * int(self.rot90)
        return np.stack([top, left, np.full_like(top, self.patch), flip.astype(np.int64), rot], axis=1)

    @staticmethod
    def crop(images: Sequence[np.ndarray], boxes: np.ndarray, scale: int = 1, channels_last: bool = True
             ) -> np.ndarray:
        """The boxes times ``scale`` cut from each image (``(H, W, C)`` when ``channels_last``, else
        ``(C, H, W)``): ``(B, p*scale, p*scale, C)`` or ``(B, C, p*scale, p*scale)``, unoriented."""
        out = []
        for img, (top, left, size, _, _) in zip(images, boxes.tolist()):
            t, l, s = top * scale, left * scale, size * scale
            h, w = (img.shape[0], img.shape[1]) if channels_last else img.shape[-2:]
            if t + s > h or l + s > w:
                raise ValueError(f"patch box top={t} left={l} size={s} (LR box x{scale}) exceeds the {h}x{w} image")
            out.append(img[t:t + s, l:l + s] if channels_last else img[..., t:t + s, l:l + s])
        return np.stack(out)

    @staticmethod
    def orient(patches: Tensor, boxes: np.ndarray) -> Tensor:
        """Each patch of ``(B, C, P, P)`` mirrored (if its box says so), then turned ``rot`` times
        counter-clockwise (``torch.rot90`` on the last two axes): one gather for the batch."""
        b, _, p, _ = patches.shape
        device = patches.device
        i = torch.arange(p, device=device).view(1, p, 1).expand(b, p, p)
        j = torch.arange(p, device=device).view(1, 1, p).expand(b, p, p)
        rot = torch.as_tensor(boxes[:, 4], device=device).view(b, 1, 1)
        # rot90 k times: out[i, j] = in[src]; k=1: (j, P-1-i), k=2: (P-1-i, P-1-j), k=3: (P-1-j, i)
        r = torch.where(rot == 1, j, torch.where(rot == 2, p - 1 - i, torch.where(rot == 3, p - 1 - j, i)))
        c = torch.where(rot == 1, p - 1 - i, torch.where(rot == 2, p - 1 - j, torch.where(rot == 3, i, j)))
        flipped = torch.as_tensor(boxes[:, 3], device=device).view(b, 1, 1).bool()
        c = torch.where(flipped, p - 1 - c, c)
        batch = torch.arange(b, device=device).view(b, 1, 1)
        return patches.permute(0, 2, 3, 1)[batch, r, c].permute(0, 3, 1, 2)

    def describe(self) -> dict[str, Any]:
        """What determines the views, for content keys (whole-image teacher outputs do not depend on it)."""
        return {"views": "patches", "format": VIEW_FORMAT, "seed": self.seed, "patch": self.patch,
                "scale": self.scale, "repeat": self.repeat, "flip": self.flip, "rot90": self.rot90}
