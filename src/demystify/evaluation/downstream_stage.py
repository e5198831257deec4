"""The classification and segmentation parts of `evaluate@MODEL`: frozen features of a model scored
by the classification protocols and a trained segmentation head; metrics, confusion matrix and
example PNGs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from demystify import machine
from demystify.backbone import eval_transform
from demystify.core.config import ClassificationParams, SegmentationParams
from demystify.core.figures import pyplot, save_png
from demystify.core.io import write_json, write_npz
from demystify.evaluation import classification as protocols
from demystify.evaluation import labelled
from demystify.evaluation import segmentation as seg
from demystify.evaluation.features import extract, load_model, read_rgb


def _read_classification(
    p: ClassificationParams, split: str, classes=None
) -> labelled.LabelledImages:
    if p.format == "voc07":
        return labelled.voc07_classification(p.data, split)
    return labelled.folder_classification(p.data, split, classes)


def classify(
    name: str,
    arch: str,
    model_path,
    p: ClassificationParams,
    out_dir: str | Path,
    device: str,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """`workers`: loader processes (None: machine.yaml's classification.workers)."""
    out_dir = Path(out_dir)
    workers = machine.load().classification_workers if workers is None else workers
    train = _read_classification(p, p.train_split)
    test = _read_classification(p, p.test_split, train.classes)
    model = load_model(model_path, arch, device)
    tx = extract(
        model,
        train.paths,
        None,
        p.size,
        device,
        p.batch_size,
        workers,
        f"classify@{name} train",
        progress,
    )
    vx = extract(
        model,
        test.paths,
        None,
        p.size,
        device,
        p.batch_size,
        workers,
        f"classify@{name} test",
        progress,
    )
    mean_ap, per_class_ap = protocols.voc07_svm(
        tx, train.labels, vx, test.labels, p.svm.costs, p.svm.folds, p.seed
    )
    metrics = {
        "svm_map": round(mean_ap, 6),
        "images_train": len(train.paths),
        "images_test": len(test.paths),
    }
    if p.format == "folder":  # single-label: top-1 protocols and a confusion matrix
        ty, vy = train.single_label, test.single_label
        decay, _ = protocols.choose_weight_decay(
            tx,
            ty,
            p.linear.weight_decays,
            p.linear.folds,
            p.linear.epochs,
            p.linear.lr,
            p.linear.batch_size,
            p.seed,
            device,
        )
        linear = protocols.linear_probe(
            tx, ty, vx, p.linear.epochs, p.linear.lr, decay, p.linear.batch_size, p.seed, device
        )
        metrics["linear_weight_decay"] = decay
        knn = protocols.knn_predict(tx, ty, vx, p.knn.k, p.knn.temperature)
        metrics.update(
            linear_top1=round(float((linear == vy).mean()), 6),
            knn_top1=round(float((knn == vy).mean()), 6),
            chance=round(1 / len(train.classes), 6),
        )
        # every test image's prediction, which the report resamples for confidence intervals
        write_npz(
            out_dir / "per_image.npz",
            path=np.asarray(test.paths, dtype=str),
            truth=vy,
            linear=linear,
            knn=knn,
            unit=test_units(p.data, test.paths),
        )
        confusion_png(vy, linear, train.classes, out_dir / "confusion.png", f"{name}: linear probe")
    write_json(
        out_dir / "per_class_ap.json", {train.classes[c]: v for c, v in per_class_ap.items()}
    )
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def test_units(root: str | Path, paths: list[str]) -> np.ndarray:
    """The independent unit of each test image, which the report's bootstrap resamples: its object
    instance where the set's `annotations.csv` (path relative to the set, instance; the synthetic
    world writes one) names it, else the image itself."""
    table_path = Path(root) / "annotations.csv"
    if table_path.is_file():
        import pandas as pd

        try:
            table = pd.read_csv(table_path, usecols=["path", "instance"])
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise labelled.LabelError(
                f"{table_path}: expected columns path, instance ({exc})"
            ) from None
        instance_of = {
            str(Path(root) / p): i for p, i in zip(table["path"], table["instance"], strict=True)
        }
        if all(p in instance_of for p in paths):
            return np.asarray([f"instance:{instance_of[p]}" for p in paths], dtype=str)
    return np.asarray(
        [
            f"image:{Path(p).relative_to(root) if Path(p).is_relative_to(root) else p}"
            for p in paths
        ],
        dtype=str,
    )


def confusion_png(
    truth: np.ndarray, pred: np.ndarray, classes: list[str], path: Path, title: str
) -> None:
    from sklearn.metrics import confusion_matrix

    plt = pyplot()

    conf = confusion_matrix(truth, pred, labels=range(len(classes)), normalize="true")
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(classes), 0.8 + 0.45 * len(classes)))
    ax.imshow(conf, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=100)


class _Scenes(Dataset):
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
    model,
    data: labelled.MaskedImages,
    p: SegmentationParams,
    device: str,
    folder: Path,
    desc: str,
    progress: bool,
    workers: int = 0,
) -> tuple[list[seg.MapFile], seg.MapFile]:
    """The stage maps (float32) and masks of every image, written batch by batch into .npy files in
    `folder`: nothing here grows with the number of images."""
    loader = DataLoader(_Scenes(data, p.size), batch_size=p.batch_size, num_workers=workers)
    n = len(data.images)
    # masks hold class indices and ignore_index: one byte where they fit (read back as int64)
    small = 0 <= data.ignore_index < 256 and len(data.classes) <= 256
    masks = seg.MapFile(folder / "masks.npy", (n, p.size, p.size), np.uint8 if small else np.int64)
    per_layer, start = None, 0
    for x, y in tqdm(loader, desc=desc, disable=None if progress else True, unit="batch"):
        maps = [m.float().cpu() for m in seg.stage_maps(model, x.to(device), list(p.layers))]
        if per_layer is None:  # the maps' shapes are known from the first batch
            per_layer = [
                seg.MapFile(folder / f"{name}.npy", (n, *m.shape[1:]), np.float32)
                for name, m in zip(p.layers, maps, strict=True)
            ]
        for store, m in zip(per_layer, maps, strict=True):
            store.write(start, m.numpy())
        masks.write(start, y.numpy())
        start += len(y)
    return per_layer, masks


def segment(
    name: str,
    arch: str,
    model_path,
    p: SegmentationParams,
    out_dir: str | Path,
    device: str,
    progress: bool = True,
    scratch: str | Path | None = None,
    workers: int | None = None,
) -> dict:
    """Train a head on the train split's stage maps, score it on the test split. The maps go to a
    temporary folder in `scratch` (default: the system's, $TMPDIR), deleted at the end, on error
    too; it needs room for them: about 15 MB an image for ResNet-50 at 512 px, 1 MB at 128 px.
    `workers`: loader processes (None: machine.yaml's segmentation.workers)."""
    out_dir = Path(out_dir)
    workers = machine.load().segmentation_workers if workers is None else workers
    reader = labelled.SEGMENTATION_READERS[p.format]
    train, test = reader(p.data, p.train_split), reader(p.data, p.test_split)
    model = load_model(model_path, arch, device)
    classes = len(train.classes)
    with tempfile.TemporaryDirectory(prefix=f"segment-{name}-", dir=scratch) as folder:
        folder = Path(folder)
        (folder / "train").mkdir()
        (folder / "test").mkdir()
        train_maps, train_masks = _maps(
            model, train, p, device, folder / "train", f"segment@{name} train", progress, workers
        )
        test_maps, test_masks = _maps(
            model, test, p, device, folder / "test", f"segment@{name} test", progress, workers
        )
        head = seg.train_head(
            train_maps,
            train_masks,
            classes,
            p.head,
            p.epochs,
            p.lr,
            p.weight_decay,
            p.batch_size,
            p.seed,
            train.ignore_index,
            device,
        )
        per_image, shown, start = [], [], 0
        for pred in seg.predict(head, test_maps, (p.size, p.size), p.batch_size, device):
            masks = test_masks[start : start + len(pred)]
            per_image += [
                seg.confusion(pred[i], masks[i], classes, train.ignore_index)
                for i in range(len(pred))
            ]
            shown += [(pred[i], masks[i]) for i in range(min(len(pred), p.examples - len(shown)))]
            start += len(pred)
    per_image = np.stack(per_image)
    result = seg.scores(per_image.sum(0))  # the sum of every image's confusion: the test set's
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
