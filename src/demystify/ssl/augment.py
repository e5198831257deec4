"""The per-image reference augmentations (torchvision.transforms.v2): MoCo v2's for every MoCo
variant, crop and flip only for the supervised baseline. Training does not call them: it applies
the same operations to whole batches (batch_augment.py), which tests/test_augment.py checks against
these. The evaluation transform (resize and normalise) is backbone.eval_transform."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from demystify.backbone import IMAGENET_MEAN, IMAGENET_STD


def mocov2(size: int, min_scale: float = 0.2) -> v2.Compose:
    """Random resized crop (min_scale-1), colour jitter 0.4/0.4/0.4/0.1 (p 0.8), grayscale (p 0.2),
    Gaussian blur (p 0.5, kernel ~10 % of the side, sigma 0.1-2), horizontal flip; uint8 CHW in."""
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def crop_flip(size: int, min_scale: float = 0.2) -> v2.Compose:
    """The standard supervised ImageNet recipe: random resized crop (min_scale-1) and horizontal flip,
    no colour, grayscale or blur; uint8 CHW in."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
