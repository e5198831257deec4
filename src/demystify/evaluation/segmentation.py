"""Semantic segmentation on a frozen backbone: the maps of chosen ResNet stages, upsampled to the
finest of them and concatenated (a hypercolumn), feed a light trainable head (`linear`: one 1x1
conv; `fcn`: 3x3 conv-BN-ReLU then 1x1), whose logits are upsampled to the mask. The backbone
never changes, so its maps are computed once and the head trains on them. They are too many to
hold in memory (ResNet-50 at 512 px: about 15 MB an image, 21 GB for VOC 2012 train), so they live
in files (`MapFile`) that are written and read a batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STAGES = ("layer1", "layer2", "layer3", "layer4")


@torch.no_grad()
def stage_maps(model: nn.Module, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
    """The outputs of `layers` of a torchvision ResNet for a batch."""
    out = []
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for name in STAGES:
        h = getattr(model, name)(h)
        if name in layers:
            out.append(h)
        if len(out) == len(layers):
            break
    return out


class MapFile:
    """An (N, ...) array in a .npy file, written and read a batch of rows at a time: what
    `train_head` and `predict` take instead of an (N, ...) tensor. Each access maps the file and
    unmaps it again, so only the rows in hand are ever resident (one mapping held open would keep
    every page it had touched in the process's resident memory, the whole file by the end).
    Indexing returns a CPU tensor (int64 if `dtype` is an integer type)."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        mm = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
        self.offset = mm.offset
        del mm

    def __len__(self) -> int:
        return self.shape[0]

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(
            self.path, dtype=self.dtype, mode=mode, offset=self.offset, shape=self.shape
        )

    def write(self, start: int, rows: np.ndarray) -> None:
        mm = self._map("r+")
        mm[start : start + len(rows)] = rows  # no flush: later mappings read the same page cache
        del mm

    def __getitem__(self, index) -> torch.Tensor:
        """Rows by a slice or by an index tensor/array, in its order (a copy, never a view)."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        mm = self._map("r")
        rows = np.array(mm[index])
        del mm
        return torch.from_numpy(rows.astype(np.int64) if rows.dtype.kind in "iu" else rows)


class Head(nn.Module):
    def __init__(self, channels: int, classes: int, kind: str, hidden: int = 256):
        super().__init__()
        if kind == "linear":
            self.net = nn.Conv2d(channels, classes, 1)
        elif kind == "fcn":
            self.net = nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, classes, 1),
            )
        else:
            raise ValueError(f"segmentation head {kind!r}: choose linear or fcn")

    def forward(self, maps: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        x = torch.cat(
            [
                m
                if m.shape[-2:] == size
                else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                for m in maps
            ],
            1,
        )
        return F.interpolate(self.net(x), size=out_size, mode="bilinear", align_corners=False)


def train_head(
    maps: list[torch.Tensor | MapFile],
    masks: torch.Tensor | MapFile,
    classes: int,
    kind: str,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    ignore_index: int,
    device: str,
) -> Head:
    """maps: per stage (N, C, h, w) float32 on CPU; masks (N, H, W) int64; either as tensors or
    as MapFiles, from which each batch is read when it is needed."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = Head(sum(m.shape[1] for m in maps), classes, kind).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(masks)
    steps = max(1, -(-n // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            y = masks[idx].to(device)
            logits = head([m[idx].to(device) for m in maps], y.shape[-2:])
            loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


@torch.no_grad()
def predict(
    head: Head,
    maps: list[torch.Tensor | MapFile],
    out_size: tuple[int, int],
    batch_size: int,
    device: str,
) -> Iterator[torch.Tensor]:
    """The predicted labels (B, H, W) of each batch of `batch_size` images, in order, on CPU."""
    for i in range(0, len(maps[0]), batch_size):
        yield head([m[i : i + batch_size].to(device) for m in maps], out_size).argmax(1).cpu()


def confusion(
    pred: torch.Tensor, target: torch.Tensor, classes: int, ignore_index: int
) -> np.ndarray:
    keep = target != ignore_index
    idx = target[keep] * classes + pred[keep]
    return torch.bincount(idx, minlength=classes * classes).reshape(classes, classes).numpy()


def scores(conf: np.ndarray) -> dict[str, float]:
    """mIoU over the classes present in ground truth or prediction, and pixel accuracy."""
    tp = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    return {
        "miou": float(np.nanmean(iou)),
        "pixel_accuracy": float(tp.sum() / max(conf.sum(), 1)),
        "iou": [None if np.isnan(v) else float(v) for v in iou],
    }
