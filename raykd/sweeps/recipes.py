"""What the sweeps' ``--recipe paper`` share: papers that count iterations in raykd's epochs, and saying out loud
where a run departs from its paper.

raykd's schedules step once per epoch (an epoch: ``patches_per_image`` views of every training image), so a paper
that trains for ``I`` iterations of batch ``B`` and steps its rate at iteration milestones is run with as many
views per image as make one epoch a round number of iterations: :func:`iteration_epochs` turns iterations into
epochs exactly (and refuses a layout where they would not be whole), so every milestone falls on the iteration the
paper names. Where no whole number of views per image does that (DF2K's 3,450 images at batch 128 or 16: an
epoch of whole batches is a multiple of 1,725 iterations, which divides none of the papers' milestones),
:func:`epoch_layout` takes one view more and caps the epoch at the round number of iterations
(``OptimConfig.steps_per_epoch``): each epoch is then that many batches of a fresh shuffle of the views.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from raykd.config import OptimConfig

__all__ = ["DIV2K_TRAIN_IMAGES", "epoch_layout", "iteration_epochs", "iteration_optim", "announce"]

DIV2K_TRAIN_IMAGES = 800  # DIV2K's training split (images 0001-0800)


def epoch_layout(steps: int, batch_size: int, images: int) -> tuple[int, int | None]:
    """``(patches_per_image, steps_per_epoch)`` that make an epoch exactly ``steps`` iterations of ``batch_size``
    over ``images`` images: ``steps x batch_size / images`` views of each image and no cap where that is whole
    (DIV2K's 800 at the papers' batches), else one view more and the epoch capped at ``steps`` iterations."""
    patches, rest = divmod(steps * batch_size, images)
    return (patches, None) if not rest else (patches + 1, steps)


def iteration_epochs(iterations: int, batch_size: int, images: int, patches_per_image: int,
                     steps_per_epoch: int | None = None) -> int:
    """The epochs that hold exactly ``iterations`` steps of ``batch_size`` when an epoch is ``patches_per_image``
    views of each of ``images`` images (the first ``steps_per_epoch`` batches of them, where given: the views must
    fill that many); a ``ValueError`` where that is not a whole number of epochs."""
    per_epoch, rest = divmod(images * patches_per_image, batch_size)
    if steps_per_epoch is not None:
        if per_epoch < steps_per_epoch:
            raise ValueError(f"{images} images x {patches_per_image} patches fill {per_epoch} steps of batch "
                             f"{batch_size}, fewer than the {steps_per_epoch} an epoch is capped at")
        per_epoch, rest = steps_per_epoch, 0
    if rest or not per_epoch or iterations % per_epoch:
        raise ValueError(f"{iterations} iterations of batch {batch_size} are not whole epochs of {images} images x "
                         f"{patches_per_image} patches ({images * patches_per_image / batch_size:g} steps each)")
    return iterations // per_epoch


def iteration_optim(lr: float, iterations: int, milestones: Sequence[int], gamma: float, batch_size: int,
                    patches_per_image: int, images: int = DIV2K_TRAIN_IMAGES, steps_per_epoch: int | None = None
                    ) -> OptimConfig:
    """The SR papers' optimiser (Adam 0.9/0.999, no weight decay) for ``iterations`` steps of ``batch_size`` with
    the rate multiplied by ``gamma`` at each of the iteration ``milestones``, in raykd's epochs of
    ``patches_per_image`` views of each of ``images`` images, capped at ``steps_per_epoch`` where given
    (:func:`epoch_layout`, :func:`iteration_epochs`: exact, or refused)."""
    def epochs(steps: int) -> int:
        return iteration_epochs(steps, batch_size, images, patches_per_image, steps_per_epoch)

    return OptimConfig(name="adam", lr=lr, betas=(0.9, 0.999), weight_decay=0.0, schedule="multistep",
                       milestones=tuple(epochs(m) for m in milestones), gamma=gamma, epochs=epochs(iterations),
                       batch_size=batch_size, steps_per_epoch=steps_per_epoch)


def announce(sweep: str, notes: Sequence[str]) -> None:
    """Print what a ``--recipe paper`` run departs from its paper in, before any long work starts (the same notes
    end the sweep's ``summary.md``)."""
    for note in notes:
        print(f"{sweep} --recipe paper: NOT THE PAPER'S: {note}", file=sys.stderr, flush=True)
