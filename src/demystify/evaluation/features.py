"""What the three evaluation stages (invariance.py, classification.py, segmentation.py, each with
its `run_stage`) share: the evaluated model (`Model`, `load_model`), how images reach it
(`Loading`: device, batch, loader processes, progress bar), images read and cropped (`read_rgb`),
and frozen features: the pooled backbone output (no projection head) of a model in eval mode, for
images resized without crop to the set's size and normalised; batched, on GPU when present."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from demystify.backbone import backbone, backbone_from, eval_transform, pooled_features
from demystify.core.images import box_bounds, decode_rgb


class FeatureError(ValueError):
    """An image or model that cannot give features; the message names the file."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str | Path | None, arch: str, device: str) -> torch.nn.Module:
    """torchvision `arch` with fc = Identity, weights from `path` at the width they were trained at
    (None: the untrained full-width init)."""
    net = backbone(arch) if path is None else backbone_from(path, arch)
    return net.to(device).eval()


@dataclass(frozen=True)
class Model:
    """The model an evaluation stage scores: its name (params.yaml variants), its architecture and
    its exported backbone file (None: the untrained full-width init)."""

    name: str
    arch: str
    path: str | Path | None

    def load(self, device: str) -> torch.nn.Module:
        return load_model(self.path, self.arch, device)


@dataclass(frozen=True)
class Loading:
    """How a stage feeds images to the model: the device, the batch size, the loader processes
    (machine.yaml's, for the stages) and whether a progress bar shows."""

    device: str
    batch_size: int = 128
    workers: int = 0
    progress: bool = False

    def batches(self, dataset: Dataset, desc: str = "") -> tqdm:
        """The dataset's batches, in order, pinned for CUDA, behind a progress bar."""
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.workers,
            pin_memory=self.device.startswith("cuda"),
        )
        return tqdm(loader, desc=desc, disable=None if self.progress else True, unit="batch")


def read_rgb(path: str, box=None) -> torch.Tensor:
    """uint8 (3, H, W) at 8 bits whatever the file's depth (demystify.core.images), cropped to box
    (x, y, w, h) rounded outwards and clipped to the image (core.images.box_bounds; the whole
    image when that leaves under 2 pixels). A box that is not finite is refused."""
    img = decode_rgb(path, FeatureError)
    if box is None:
        return img
    if not np.isfinite(np.asarray(box, dtype=float)).all():
        raise FeatureError(f"{path}: crop box {tuple(box)} is not finite")
    bounds = box_bounds(box, img.shape[-1], img.shape[-2])
    if bounds is None:
        return img
    x0, y0, x1, y1 = bounds
    return img[:, y0:y1, x0:x1]


class _Images(Dataset):
    def __init__(self, paths, boxes, size: int):
        self.paths, self.boxes, self.transform = paths, boxes, eval_transform(size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(read_rgb(self.paths[i], self.boxes[i]))


def extract(
    model: torch.nn.Module,
    paths: list[str],
    boxes: list | None,
    size: int,
    loading: Loading,
    desc: str = "",
) -> np.ndarray:
    """(N, D) float32 pooled features of the images at `paths` (each cropped to its box, when
    `boxes` is given), resized to `size`, in the order of `paths`."""
    boxes = boxes or [None] * len(paths)
    batches = loading.batches(_Images(paths, boxes, size), desc)
    return pooled_features(model, batches, loading.device, bf16=True).numpy()
