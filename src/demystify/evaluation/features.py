"""Frozen features: the pooled backbone output (no projection head) of a model in eval mode,
for images resized without crop to the set's size and normalised; batched, on GPU when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from demystify.backbone import backbone, backbone_from, eval_transform
from demystify.core.images import decode_rgb


class FeatureError(ValueError):
    """An image or model that cannot give features; the message names the file."""


def load_model(path: str | Path, arch: str, device: str) -> torch.nn.Module:
    """torchvision `arch` with fc = Identity, weights from `path` at the width they were trained at
    (None: the untrained full-width init)."""
    net = backbone(arch) if path is None else backbone_from(path, arch)
    return net.to(device).eval()


def read_rgb(path: str, box=None) -> torch.Tensor:
    """uint8 (3, H, W) at 8 bits whatever the file's depth (demystify.core.images), cropped to box
    (x, y, w, h) clipped to the image."""
    img = decode_rgb(path, FeatureError)
    if box is not None:
        h, w = img.shape[-2:]
        x, y, bw, bh = box
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            img = img[:, y0:y1, x0:x1]
    return img


class _Images(Dataset):
    def __init__(self, paths, boxes, size: int):
        self.paths, self.boxes, self.transform = paths, boxes, eval_transform(size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(read_rgb(self.paths[i], self.boxes[i]))


@torch.no_grad()
def extract(
    model: torch.nn.Module,
    paths: list[str],
    boxes: list | None,
    size: int,
    device: str,
    batch_size: int = 128,
    workers: int = 0,
    desc: str = "",
    progress: bool = False,
) -> np.ndarray:
    """(N, D) float32 pooled features, in the order of `paths`."""
    boxes = boxes or [None] * len(paths)
    loader = DataLoader(
        _Images(paths, boxes, size),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
    )
    cuda = device.startswith("cuda")
    out = []
    for x in tqdm(loader, desc=desc, disable=None if progress else True, unit="batch"):
        x = x.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
