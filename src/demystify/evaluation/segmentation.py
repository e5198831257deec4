"""The stage `evaluate_segmentation@MODEL` (`run_stage`): semantic segmentation on a frozen
backbone, scored by the mIoU and pixel accuracy of the test split; metrics, every test image's
confusion matrix, per-class IoU and example PNGs. The maps of chosen ResNet stages, upsampled to the
finest of them and concatenated (a hypercolumn), feed a light trainable head (`linear`: one 1x1
conv; `fcn`: 3x3 conv-BN-ReLU then 1x1), whose logits are upsampled to the mask. The backbone
never changes, so its maps are computed once and the head trains on them. They are too many to
hold in memory (ResNet-50 at 512 px: about 15 MB an image, 21 GB for VOC 2012 train), so they live
in files (`MapFile`) that are written and read a batch at a time."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from demystify import machine
from demystify.backbone import eval_transform
from demystify.core.config import SegmentationParams
from demystify.core.figures import pyplot, save_png
from demystify.core.io import write_json, write_npz
from demystify.evaluation import labelled
from demystify.evaluation.features import Loading, Model, default_device, read_rgb

STAGES = ("layer1", "layer2", "layer3", "layer4")


def run_stage(
    model: Model,
    p: SegmentationParams,
    out_dir: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    workers: int | None = None,
    scratch: str | Path | None = None,
) -> dict:
    """`evaluate_segmentation@MODEL`: train a head on the train split's stage maps, score it on
    the test split; metrics.json, per_image.npz, per_class_iou.json and examples.png into out_dir.
    The maps go to a temporary folder in `scratch` (default: the system's, $TMPDIR), deleted at
    the end, on error too; it needs room for them: about 15 MB an image for ResNet-50 at 512 px,
    1 MB at 128 px. `device`: None, CUDA when present; `workers`: loader processes (None:
    machine.yaml's segmentation.workers)."""
    workers = machine.load().segmentation_workers if workers is None else workers
    loading = Loading(device or default_device(), p.batch_size, workers, progress)
    reader = labelled.SEGMENTATION_READERS[p.format]
    train, test = reader(p.data, p.train_split), reader(p.data, p.test_split)
    net = model.load(loading.device)
    with tempfile.TemporaryDirectory(prefix=f"segment-{model.name}-", dir=scratch) as folder:
        maps = {
            split: _maps(
                net, data, p, Path(folder) / split, loading, f"segment@{model.name} {split}"
            )
            for split, data in (("train", train), ("test", test))
        }
        head = train_head(*maps["train"], len(train.classes), p, train.ignore_index, loading.device)
        per_image, shown = _score(head, *maps["test"], p, train, loading.device)
    metrics = _write(model.name, p, (train, test), per_image, shown, Path(out_dir))
    print(
        f"evaluate_segmentation@{model.name}: "
        + ", ".join(f"{k} {metrics[k]}" for k in ("miou", "pixel_accuracy"))
    )
    return metrics


class _Scenes(Dataset):
    """A split's images (transformed) and masks, both resized to `size` (masks: nearest)."""

    def __init__(self, data: labelled.MaskedImages, size: int):
        self.data, self.size, self.transform = data, size, eval_transform(size)

    def __len__(self):
        return len(self.data.images)

    def __getitem__(self, i):
        img = read_rgb(self.data.images[i])
        mask = torch.from_numpy(
            labelled.read_mask(self.data.masks[i], self.data, tuple(img.shape[-2:]))
        )
        mask = F.interpolate(mask[None, None].float(), size=(self.size, self.size), mode="nearest")[
            0, 0
        ].long()
        return self.transform(img), mask


def _maps(
    model: nn.Module,
    data: labelled.MaskedImages,
    p: SegmentationParams,
    folder: Path,
    loading: Loading,
    desc: str,
) -> tuple[list[MapFile], MapFile]:
    """The stage maps (float32) and masks of every image, written batch by batch into .npy files in
    `folder` (made here): nothing here grows with the number of images."""
    folder.mkdir()
    n = len(data.images)
    # masks hold class indices and ignore_index: one byte where they fit (read back as int64)
    small = 0 <= data.ignore_index < 256 and len(data.classes) <= 256
    masks = MapFile(folder / "masks.npy", (n, p.size, p.size), np.uint8 if small else np.int64)
    per_layer, start = None, 0
    for x, y in loading.batches(_Scenes(data, p.size), desc):
        maps = [m.float().cpu() for m in stage_maps(model, x.to(loading.device), list(p.layers))]
        if per_layer is None:  # the maps' shapes are known from the first batch
            per_layer = [
                MapFile(folder / f"{name}.npy", (n, *m.shape[1:]), np.float32)
                for name, m in zip(p.layers, maps, strict=True)
            ]
        for store, m in zip(per_layer, maps, strict=True):
            store.write(start, m.numpy())
        masks.write(start, y.numpy())
        start += len(y)
    return per_layer, masks


def _score(
    head: Head,
    maps: list[MapFile],
    masks: MapFile,
    p: SegmentationParams,
    data: labelled.MaskedImages,
    device: str,
) -> tuple[np.ndarray, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Every test image's confusion matrix (N, C, C) over `data`'s classes, and the first
    p.examples (prediction, mask) pairs."""
    classes = len(data.classes)
    per_image, shown, start = [], [], 0
    for pred in predict(head, maps, (p.size, p.size), p.batch_size, device):
        truth = masks[start : start + len(pred)]
        per_image += [
            confusion(pred[i], truth[i], classes, data.ignore_index) for i in range(len(pred))
        ]
        shown += [(pred[i], truth[i]) for i in range(min(len(pred), p.examples - len(shown)))]
        start += len(pred)
    return np.stack(per_image), shown


def _write(
    name: str,
    p: SegmentationParams,
    splits: tuple[labelled.MaskedImages, labelled.MaskedImages],
    per_image: np.ndarray,
    shown: list[tuple[torch.Tensor, torch.Tensor]],
    out_dir: Path,
) -> dict:
    """The stage's files from the test images' confusion matrices; its metrics."""
    train, test = splits
    result = scores(per_image.sum(0))  # the sum of every image's confusion: the test set's
    write_npz(
        out_dir / "per_image.npz", path=np.asarray(test.images, dtype=str), confusion=per_image
    )
    metrics = {
        "miou": round(result["miou"], 6),
        "pixel_accuracy": round(result["pixel_accuracy"], 6),
        "images_train": len(train.images),
        "images_test": len(test.images),
    }
    write_json(out_dir / "per_class_iou.json", dict(zip(train.classes, result["iou"], strict=True)))
    write_json(out_dir / "metrics.json", metrics)
    if shown:
        pred, masks = (torch.stack(t) for t in zip(*shown, strict=True))
        examples_png(
            test, pred, masks, p, out_dir / "examples.png", f"{name}: mIoU {metrics['miou']:.3f}"
        )
    return metrics


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
    p: SegmentationParams,
    ignore_index: int,
    device: str,
) -> Head:
    """maps: per stage (N, C, h, w) float32 on CPU; masks (N, H, W) int64; either as tensors or
    as MapFiles, from which each batch is read when it is needed. `p` gives the head (p.head) and
    its training: p.epochs, p.lr, p.weight_decay, p.batch_size, p.seed."""
    epochs, lr, batch_size, seed = p.epochs, p.lr, p.batch_size, p.seed
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = Head(sum(m.shape[1] for m in maps), classes, p.head).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=p.weight_decay)
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


def examples_png(
    data: labelled.MaskedImages,
    pred: torch.Tensor,
    masks: torch.Tensor,
    p: SegmentationParams,
    path: Path,
    title: str,
) -> None:
    """A few test scenes: image | ground truth | prediction."""
    plt = pyplot()

    n = min(p.examples, len(data.images))
    classes = len(data.classes)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    for i in range(n):
        img = F.interpolate(
            read_rgb(data.images[i])[None].float(), size=(p.size, p.size), mode="bilinear"
        )[0]
        gt = masks[i].numpy().astype(float)
        gt[gt == data.ignore_index] = np.nan
        for ax, (picture, label) in zip(
            axes[i],
            (
                (img.permute(1, 2, 0).numpy() / 255, "image"),
                (gt, "ground truth"),
                (pred[i].numpy(), "prediction"),
            ),
            strict=True,
        ):
            ax.imshow(
                picture,
                **(
                    {}
                    if label == "image"
                    else {
                        "cmap": "tab20",
                        "vmin": 0,
                        "vmax": max(classes - 1, 1),
                        "interpolation": "nearest",
                    }
                ),
            )
            ax.set_axis_off()
            if i == 0:
                ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=100)
