"""Readers of the invariance evaluation sets, in their public layouts (the synthetic world writes
the same layouts, so these readers run on every pipeline run).

Each reader returns an `EvalSet`: image paths (with an optional crop box), a transformation-set
id and a target class per image, following the paper's public measurement code:

- ALOI (`aloi_red2_{view,ill,col}/png2/<object>/<files>`): one set per object; the class is the object.
- GOT-10k occlusion (`list.txt`, per video `groundtruth.txt`, `cover.label`, `meta_info.ini`):
  frames cropped to their box; videos whose cover levels span less than `min_span` are dropped;
  one frame per distinct cover level, drawn with a legacy NumPy RandomState(seed) in the public
  code's order (videos in list order, levels ascending); one set per video, class = object class.
- PASCAL3D+ (`Image_sets/<cls>_imagenet_{train,val}.txt`, `Images/<cls>_imagenet/<name>.JPEG`,
  `Annotations/<cls>_imagenet/<name>.mat`, and `<cls>_pascal.txt` "name box_index" lines for the
  PASCAL part when present): object crops; azimuth bin (az mod 180) // 30, elevation bin
  (el mod 90) // 30 of the coarse viewpoint. "instance": a set is one class and (azimuth,
  elevation) bin; "instance_viewpoint": the k-th image of each azimuth bin of a class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from demystify.core.images import report_skipped, split_images
from demystify.data import check_entry, got10k, read_list


class SetError(ValueError):
    """An evaluation set cannot be read; the message names the file or folder."""


@dataclass
class EvalSet:
    name: str
    paths: list[str]
    instance: np.ndarray  # (N,) transformation-set id
    classes: np.ndarray  # (N,) target class (str)
    boxes: list[tuple[float, float, float, float] | None] = field(
        default_factory=list
    )  # x, y, w, h
    skipped: list[str] = field(default_factory=list)  # what the reader dropped, and why
    # (N,) str: the independent unit of each image, which the report's bootstrap resamples (an
    # object, a video, an instance; sets that show the same objects name them alike)
    unit: np.ndarray | None = None

    def __post_init__(self):
        if not self.boxes:
            self.boxes = [None] * len(self.paths)
        if self.unit is None:
            self.unit = np.asarray([f"{self.name}:{i}" for i in self.instance], dtype=str)

    def __len__(self) -> int:
        return len(self.paths)


def _images(folder: Path, skipped: list[Path]) -> list[Path]:
    """The images of `folder`, sorted; the other files are added to `skipped` (named once per set)."""
    images, others = split_images(p for p in folder.iterdir() if not p.is_dir())
    skipped += others
    return sorted(images)


def aloi(root: str | Path, kind: str) -> EvalSet:
    """ALOI `kind` in view | ill | col; `root` holds `aloi_red2_<kind>/png2/` (or is that folder)."""
    root = Path(root)
    folder = next(
        (
            f
            for f in (root / f"aloi_red2_{kind}" / "png2", root / f"aloi_red2_{kind}", root)
            if f.is_dir() and any(c.name.isdigit() for c in f.iterdir())
        ),
        None,
    )
    if folder is None:
        raise SetError(f"{root}: no ALOI object folders (aloi_red2_{kind}/png2/<number>/) found")
    paths, ids, skipped = [], [], []
    for obj in sorted(
        (c for c in folder.iterdir() if c.is_dir() and c.name.isdigit()), key=lambda c: int(c.name)
    ):
        images = _images(obj, skipped)
        paths += [str(p) for p in images]
        ids += [int(obj.name)] * len(images)
    report_skipped(f"aloi_{kind} {folder}", skipped, folder)
    ids = np.asarray(ids)
    # the unit is the object, named alike in the view, illumination and colour sets (the same objects)
    return EvalSet(
        f"aloi_{kind}", paths, ids, ids.astype(str), unit=np.asarray([f"aloi:{i}" for i in ids])
    )


def got10k_occlusion(root: str | Path, seed: int = 1992, min_span: int = 4) -> EvalSet:
    """The occlusion set from a GOT-10k split folder (e.g. GOT-10k/train)."""
    root = Path(root)
    try:
        videos = got10k.read_split(root)
    except got10k.AnnotationError as exc:
        raise SetError(str(exc)) from None
    rng = np.random.RandomState(seed)  # legacy generator: the public code's np.random.seed(1992)
    paths, ids, classes, boxes, skipped, units = [], [], [], [], [], []
    kept = 0
    for video in videos:
        seq = root / video
        try:
            meta = got10k.read_meta(seq)
            ann = got10k.read_annotations(seq)
        except got10k.AnnotationError as exc:
            raise SetError(str(exc)) from None
        cls = meta.get("object_class", "").replace(" ", "_")
        if not cls:
            raise SetError(f"{seq / 'meta_info.ini'}: no object_class")
        cover = ann["cover"].to_numpy()
        levels = np.unique(cover)
        if (cover < 0).all():
            skipped.append(f"{video}: no cover.label")
            continue
        if levels.max() - levels.min() < min_span:
            skipped.append(f"{video}: cover levels span {levels.max() - levels.min()} < {min_span}")
            continue
        for level in levels:
            frame = int(rng.choice(np.flatnonzero(cover == level)))
            row = ann.iloc[frame]
            box = (float(row.x), float(row.y), float(row.w), float(row.h))
            paths.append(str(seq / f"{frame + 1:08d}.jpg"))
            boxes.append(box if np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0 else None)
            ids.append(kept)
            classes.append(cls)
            units.append(f"got10k:{video}")
        kept += 1
    return EvalSet(
        "got10k_occlusion",
        paths,
        np.asarray(ids),
        np.asarray(classes),
        boxes,
        skipped,
        np.asarray(units, dtype=str),
    )


@dataclass(frozen=True)
class _Object:
    path: str
    cls: str
    box: tuple[float, float, float, float]
    azimuth: float
    elevation: float


def _pascal3d_object(ann_path: Path, image: Path, cls: str, index: int) -> _Object:
    from scipy.io import loadmat

    if not ann_path.is_file():
        raise SetError(f"{ann_path}: annotation file not found")
    if not image.is_file():
        raise SetError(f"{image}: image not found")
    try:
        mat = loadmat(ann_path, struct_as_record=False)
    except Exception as exc:  # noqa: BLE001 - scipy raises many kinds (MatReadError, ValueError, zlib, ...)
        raise SetError(
            f"{ann_path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})"
        ) from None
    try:
        record = mat["record"][0, 0]
        obj = record.objects[0, index]
        x1, y1, x2, y2 = (float(v) for v in np.ravel(obj.bbox)[:4])
        view = obj.viewpoint[0, 0]
        az, el = float(np.ravel(view.azimuth_coarse)[0]), float(np.ravel(view.elevation_coarse)[0])
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise SetError(
            f"{ann_path}: not a PASCAL3D+ annotation with objects[{index}].bbox and "
            f"viewpoint.azimuth_coarse/elevation_coarse ({type(exc).__name__}: {exc})"
        ) from None
    return _Object(str(image), cls, (x1, y1, x2 - x1, y2 - y1), az, el)


def _pascal3d_objects(root: Path) -> list[_Object]:
    lists = sorted((root / "Image_sets").glob("*_imagenet_train.txt"))
    if not lists:
        raise SetError(f"{root / 'Image_sets'}: no <class>_imagenet_train.txt lists")
    classes = [p.name.split("_")[0] for p in lists]
    objects = []
    for cls in classes:
        for split in ("train", "val"):
            list_path = root / "Image_sets" / f"{cls}_imagenet_{split}.txt"
            for name in read_list(list_path, SetError).split():
                check_entry(name, list_path, SetError)
                objects.append(
                    _pascal3d_object(
                        root / "Annotations" / f"{cls}_imagenet" / f"{name}.mat",
                        root / "Images" / f"{cls}_imagenet" / f"{name}.JPEG",
                        cls,
                        0,
                    )
                )
    for cls in classes:
        list_path = root / "Image_sets" / f"{cls}_pascal.txt"
        if not list_path.is_file():
            continue
        for no, line in enumerate(read_list(list_path, SetError).splitlines(), start=1):
            if line.strip():
                fields = line.split()
                if len(fields) < 2 or not (fields[1].isascii() and fields[1].isdigit()):
                    raise SetError(
                        f"{list_path}:{no}: expected 'name box_index', got {line.strip()!r}"
                    )
                name, index = fields[0], int(fields[1])
                check_entry(name, f"{list_path}:{no}", SetError)
                objects.append(
                    _pascal3d_object(
                        root / "Annotations" / f"{cls}_pascal" / f"{name}.mat",
                        root / "Images" / f"{cls}_pascal" / f"{name}.jpg",
                        cls,
                        index,
                    )
                )
    return objects


def pascal3d(root: str | Path) -> dict[str, EvalSet]:
    """The "instance" and "instance_viewpoint" sets of a PASCAL3D+ release folder."""
    objects = _pascal3d_objects(Path(root))
    paths = [o.path for o in objects]
    boxes = [o.box for o in objects]
    classes = np.asarray([o.cls for o in objects])
    az_bin = np.asarray([(o.azimuth % 180) // 30 for o in objects], dtype=int)
    el_bin = np.asarray([(o.elevation % 90) // 30 for o in objects], dtype=int)

    # instance: same class and viewpoint bin, different instances
    instance = np.zeros(len(objects), dtype=int)
    offset = 0
    for cls in np.unique(classes):
        rows = np.flatnonzero(classes == cls)
        _, inverse = np.unique(
            np.stack([az_bin[rows], el_bin[rows]], 1), axis=0, return_inverse=True
        )
        instance[rows] = inverse.ravel() + offset
        offset += inverse.max() + 1

    # instance + viewpoint: the k-th image of each azimuth bin of a class; numbering goes on
    # from the largest count so far, as the public code does
    viewpoint = np.zeros(len(objects), dtype=int)
    counts = np.zeros(6, dtype=int)
    for cls in np.unique(classes):
        counts = np.full(6, counts.max())
        for i in np.flatnonzero(classes == cls):
            viewpoint[i] = counts[az_bin[i]]
            counts[az_bin[i]] += 1
    unit = _pascal3d_units(Path(root), paths)
    return {
        "pascal3d_instance": EvalSet(
            "pascal3d_instance", paths, instance, classes, boxes, unit=unit
        ),
        "pascal3d_instance_viewpoint": EvalSet(
            "pascal3d_instance_viewpoint", paths, viewpoint, classes, list(boxes), unit=unit.copy()
        ),
    }


def _pascal3d_units(root: Path, paths: list[str]) -> np.ndarray:
    """The independent unit of each object crop: its instance where a `labels.csv` (path, instance;
    the synthetic world writes one) says which, else its image file (a photograph's objects go
    together)."""
    labels = root / "labels.csv"
    if labels.is_file():
        import pandas as pd

        try:
            table = pd.read_csv(labels, usecols=["path", "instance"])
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise SetError(f"{labels}: expected columns path, instance ({exc})") from None
        instance_of = {
            str(root / p): i for p, i in zip(table["path"], table["instance"], strict=True)
        }
        if all(p in instance_of for p in paths):
            return np.asarray([f"pascal3d:{instance_of[p]}" for p in paths], dtype=str)
    return np.asarray(
        [
            f"pascal3d:{Path(p).relative_to(root) if Path(p).is_relative_to(root) else p}"
            for p in paths
        ],
        dtype=str,
    )
