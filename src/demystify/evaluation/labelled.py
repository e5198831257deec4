"""Readers of labelled image sets for the downstream evaluations, in their public layouts.

Classification (a `LabelledImages`: paths, a (N, C) label matrix of 1 / 0 (absent) / -1
(difficult: ignored by the VOC07 protocol), class names):
- `folder`: `<root>/<split>/<class>/<image>` (ImageFolder), one class per image;
- `voc07`: PASCAL VOC 2007, `ImageSets/Main/<class>_<split>.txt` lines "name label" with label
  1 / -1 / 0 (difficult), images `JPEGImages/<name>.jpg`; multi-label.

Segmentation (a `MaskedImages`: image and mask paths, class names, the ignored mask value):
- `world`: `<root>/<split>/{images,masks}/<name>.png`, `<root>/classes.txt` (index = mask value);
- `voc2012`: `ImageSets/Segmentation/<split>.txt`, `JPEGImages/<name>.jpg`,
  `SegmentationClass/<name>.png` (palette indices, 255 = void);
- `ade20k`: ADEChallengeData2016 `images/<split>/<name>.jpg`, `annotations/<split>/<name>.png`
  (0 = unlabelled, ignored; 1..150 the classes, shifted to 0..149).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demystify.core.images import report_skipped, split_images
from demystify.data import check_entry, read_list

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class LabelError(ValueError):
    """A labelled set cannot be read; the message names the file or folder."""


@dataclass
class LabelledImages:
    paths: list[str]
    labels: np.ndarray  # (N, C) int8: 1 present, 0 absent, -1 difficult
    classes: list[str]

    @property
    def single_label(self) -> np.ndarray:
        """(N,) class index of single-label data."""
        return self.labels.argmax(1)


@dataclass
class MaskedImages:
    images: list[str]
    masks: list[str]
    classes: list[str]
    ignore_index: int = 255
    shift: int = 0  # added to every mask value before use (ADE20K: -1, its 0 becoming ignored)


def _images(folder: Path) -> list[Path]:
    """The images of `folder`, sorted; the other files named in one line on stderr."""
    images, skipped = split_images(p for p in folder.iterdir() if not p.is_dir())
    report_skipped(f"split {folder}", skipped, folder)
    return sorted(images)


def folder_classification(
    root: str | Path, split: str, classes: list[str] | None = None
) -> LabelledImages:
    folder = Path(root) / split
    if not folder.is_dir():
        raise LabelError(f"{folder}: split folder not found")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    classes = list(classes) if classes is not None else found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise LabelError(
            f"{folder / unknown[0]}: class {unknown[0]!r} is not in the class list {classes}"
        )
    paths, index, skipped = [], [], []
    for i, cls in enumerate(classes):
        listed = sorted((folder / cls).glob("*")) if (folder / cls).is_dir() else []
        images, others = split_images(p for p in listed if not p.is_dir())
        paths += [str(p) for p in images]
        index += [i] * len(images)
        skipped += others
    report_skipped(f"split {folder}", skipped, folder)
    if not paths:
        raise LabelError(f"{folder}: empty split (no images in class folders)")
    labels = np.zeros((len(paths), len(classes)), np.int8)
    labels[np.arange(len(paths)), index] = 1
    return LabelledImages(paths, labels, classes)


def voc07_classification(root: str | Path, split: str) -> LabelledImages:
    root = Path(root)
    main = root / "ImageSets" / "Main"
    names: list[str] | None = None
    columns = []
    for cls in VOC_CLASSES:
        path = main / f"{cls}_{split}.txt"
        rows = [line.split() for line in read_list(path, LabelError).splitlines() if line.strip()]
        for no, row in enumerate(rows, start=1):
            if len(row) != 2 or row[1] not in ("1", "-1", "0"):
                raise LabelError(f"{path}:{no}: expected 'name 1|-1|0', got {' '.join(row)!r}")
            check_entry(row[0], path, LabelError)
        if names is None:
            names = [r[0] for r in rows]
        elif [r[0] for r in rows] != names:
            raise LabelError(
                f"{path}: lists other images than {main / (VOC_CLASSES[0] + '_' + split + '.txt')}"
            )
        # VOC: 1 present, -1 absent, 0 difficult -> ours: 1 present, 0 absent, -1 difficult
        columns.append([{"1": 1, "-1": 0, "0": -1}[r[1]] for r in rows])
    if not names:
        raise LabelError(f"{main}: empty split {split!r}")
    paths = [str(root / "JPEGImages" / f"{n}.jpg") for n in names]
    return LabelledImages(paths, np.asarray(columns, np.int8).T.copy(), list(VOC_CLASSES))


def world_segmentation(root: str | Path, split: str) -> MaskedImages:
    root = Path(root)
    classes_file = root / "classes.txt"
    classes = [c for c in read_list(classes_file, LabelError).splitlines() if c.strip()]
    images_dir, masks_dir = root / split / "images", root / split / "masks"
    if not images_dir.is_dir():
        raise LabelError(f"{images_dir}: folder not found")
    images = _images(images_dir)
    if not images:
        raise LabelError(f"{images_dir}: empty split")
    masks = [masks_dir / f"{p.stem}.png" for p in images]
    return MaskedImages([str(p) for p in images], [str(m) for m in masks], classes)


def voc2012_segmentation(root: str | Path, split: str) -> MaskedImages:
    root = Path(root)
    path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    names = [check_entry(n, path, LabelError) for n in read_list(path, LabelError).split()]
    if not names:
        raise LabelError(f"{path}: empty split")
    return MaskedImages(
        [str(root / "JPEGImages" / f"{n}.jpg") for n in names],
        [str(root / "SegmentationClass" / f"{n}.png") for n in names],
        ["background", *VOC_CLASSES],
    )


def ade20k_segmentation(root: str | Path, split: str, num_classes: int = 150) -> MaskedImages:
    root = Path(root)
    split = {"train": "training", "val": "validation", "test": "validation"}.get(split, split)
    images_dir = root / "images" / split
    if not images_dir.is_dir():
        raise LabelError(f"{images_dir}: folder not found")
    images = _images(images_dir)
    if not images:
        raise LabelError(f"{images_dir}: empty split")
    masks = [root / "annotations" / split / f"{p.stem}.png" for p in images]
    objects = root / "objectInfo150.csv"
    classes = [f"class{i + 1}" for i in range(num_classes)]
    if objects.is_file():
        import pandas as pd

        try:
            table = pd.read_csv(objects, encoding="utf-8")
            names = table["Name"]
        except (
            ValueError,
            KeyError,
            OSError,
        ) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError: ValueErrors
            raise LabelError(
                f"{objects}: not ADE20K's class table with a 'Name' column "
                f"({type(exc).__name__}: {exc})"
            ) from None
        classes = [str(n).split(";")[0] for n in names][:num_classes]
    return MaskedImages(
        [str(p) for p in images], [str(m) for m in masks], classes, ignore_index=255, shift=-1
    )


SEGMENTATION_READERS = {
    "world": world_segmentation,
    "voc2012": voc2012_segmentation,
    "ade20k": ade20k_segmentation,
}


def read_mask(path: str, data: MaskedImages, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) int64 class indices; `data.ignore_index` where unlabelled. A value outside the class
    list is an error naming the file; a mask of another size than its image (`size`) too."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mask = np.asarray(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L")).astype(
                np.int64
            )
    except (OSError, ValueError) as exc:
        raise LabelError(f"{path}: cannot read mask ({exc})") from None
    if size is not None and mask.shape != tuple(size):
        raise LabelError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {size[1]}x{size[0]}"
        )
    ignore = mask == data.ignore_index
    if data.shift:
        ignore |= mask == 0
        mask = mask + data.shift
    bad = (~ignore) & ((mask < 0) | (mask >= len(data.classes)))
    if bad.any():
        value = int(mask[bad][0] - data.shift)
        raise LabelError(f"{path}: label {value} outside the {len(data.classes)} classes")
    return np.where(ignore, data.ignore_index, mask)
