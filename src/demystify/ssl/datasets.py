"""What each variant trains on: positive pairs of images (or labelled images for `supervised`).

Every sample's augmentation is seeded by (seed, pass, index), so a batch is the same whatever
the number of loader workers or processes, and a resumed run sees exactly the batches an
uninterrupted run would have seen. The sampler (train.StreamSampler) hands out (index, pass):
which pass over the corpus the draw belongs to.
"""

from __future__ import annotations

import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from demystify.core import frames_store
from demystify.core.images import box_bounds, decode_rgb, report_skipped, split_images


class DataError(ValueError):
    """The variant's data is unusable; the message names the file or folder."""


@dataclass(frozen=True)
class Item:
    path_a: str
    path_b: str | None = None  # None: the second view comes from the same image
    box_a: tuple[float, float, float, float] | None = None  # crop (x, y, w, h) before augmenting
    box_b: tuple[float, float, float, float] | None = None
    label: int = -1


def walk_files(folder: Path) -> tuple[list[Path], list[str]]:
    """Every file under `folder` (unsorted), following symlinked folders, which Path.rglob does not
    (Python 3.11): a corpus whose class folders are links is read whole. A folder that is one of its
    own ancestors (a symlink loop) is not entered again; the second value says which, and where it
    leads. A link to a folder outside any loop is followed each time it is met. A folder that cannot
    be listed is a DataError naming it."""
    files: list[Path] = []
    loops: list[str] = []
    stack: list[tuple[str, frozenset[str]]] = [(str(folder), frozenset())]
    while stack:
        path, ancestors = stack.pop()
        real = os.path.realpath(path)
        if real in ancestors:
            loops.append(f"{path}: symlink loop back to {real}, not entered again")
            continue
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            raise DataError(f"{path}: cannot list folder ({exc.strerror or exc})") from None
        for entry in entries:
            try:
                is_dir = (
                    entry.is_dir()
                )  # follows symlinks; a broken link is a file (rejected when read)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((entry.path, ancestors | {real}))
            else:
                files.append(Path(entry.path))
    return files, loops


def _images(folder: Path) -> list[Path]:
    """The images under `folder`, sorted as Path sorts (the order of the committed results); the
    files skipped for their suffix are named in one line on stderr."""
    if not folder.is_dir():
        raise DataError(f"{folder}: corpus folder not found")
    files, loops = walk_files(folder)
    for loop in loops:
        print(f"corpus {folder}: skipped {loop}", file=sys.stderr)
    images, skipped = split_images(files)
    report_skipped(f"corpus {folder}", skipped, folder)
    return sorted(images)


def image_items(folder: Path, labelled: bool = False) -> tuple[list[Item], list[str]]:
    """Every image under `folder`; with `labelled`, the ImageFolder class (parent folder name). A
    frames folder of zips (extract_frames') is read as its frames, in frame order (`<video>/NNNNNN.jpg`)."""
    if frames_store.is_sharded(folder):
        return _frame_items(folder, labelled)
    paths = _images(folder)
    classes = sorted({p.parent.name for p in paths}) if labelled else []
    index = {c: i for i, c in enumerate(classes)}
    items = [Item(str(p), label=index[p.parent.name] if labelled else -1) for p in paths]
    return items, classes


def _frame_items(folder: Path, labelled: bool) -> tuple[list[Item], list[str]]:
    try:
        frames = frames_store.FrameStore(folder).frame_addresses()
    except frames_store.FramesError as exc:
        raise DataError(str(exc)) from None
    videos = [PurePath(frame).parent.name for frame, _ in frames]
    classes = sorted(set(videos)) if labelled else []
    index = {c: i for i, c in enumerate(classes)}
    return [
        Item(address, label=index[v] if labelled else -1)
        for (_, address), v in zip(frames, videos, strict=True)
    ], classes


def read_pairs(pairs_path: Path) -> pd.DataFrame:
    if not pairs_path.is_file():
        raise DataError(f"{pairs_path}: pairs manifest not found (run mine_pairs first)")
    try:
        return pd.read_parquet(pairs_path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(
            f"{pairs_path}: not a readable parquet file ({type(exc).__name__}: {exc})"
        ) from None


def pair_items(
    pairs_path: Path, frames_root: Path, crops: bool, same_crop: bool = False
) -> list[Item]:
    """Pairs of the pairs manifest: whole frames (frame-temporal) or the tracked boxes (region tracker);
    with `same_crop` (positives `crops`), both views are cut from box a of frame a, so the variant
    differs from the region tracker only in the second view not being another time.
    Where the manifest records each frame's MD5 (`md5_a`, `md5_b`, written by mine_pairs), every frame
    must still have it: frames re-extracted after mining are an error, never silently trained on."""
    pairs = read_pairs(pairs_path)
    need = ["path_a", "path_b"] + ([f"{v}_{c}" for v in "ab" for c in "xywh"] if crops else [])
    absent = [c for c in need if c not in pairs.columns]
    if absent:
        raise DataError(f"{pairs_path}: not a pairs manifest (no column {', '.join(absent)})")
    frames = pd.unique(pairs[["path_a", "path_b"]].to_numpy().ravel())
    outside = [repr(p) for p in frames if _outside(p)]
    if outside:
        raise DataError(
            f"{pairs_path}: {len(outside)} frame path(s) point outside {frames_root} (absolute, "
            f"'..' or not a name), e.g. {', '.join(outside[:3])}"
        )
    store = frames_store.FrameStore(frames_root)
    missing = [p for p in frames if not store.exists(p)]
    if missing:
        raise DataError(
            f"{pairs_path}: {len(missing)} frame(s) it points at are missing under {frames_root}, "
            f"e.g. {', '.join(missing[:3])}"
        )
    if has_frame_hashes(pairs.columns):
        _verify_frames(pairs, pairs_path, store)
    items = []
    for r in pairs.itertuples():
        boxes = (
            ((r.a_x, r.a_y, r.a_w, r.a_h), (r.b_x, r.b_y, r.b_w, r.b_h)) if crops else (None, None)
        )
        if same_crop:  # path_b None: the second view is drawn from the first view's image and box
            items.append(Item(store.address(r.path_a), None, boxes[0]))
        else:
            items.append(Item(store.address(r.path_a), store.address(r.path_b), *boxes))
    return items


def same_source_share(groups: pd.Series) -> float:
    """The chance that a random queue key comes from the query's own source (video, or object
    instance): sum over sources of (n_s / N)^2, each item drawn uniformly. Such keys are negatives of
    the same object, so a high share pushes apart what the positives pull together."""
    shares = groups.value_counts(normalize=True)
    return float((shares**2).sum())


def pair_sources(pairs_path: Path) -> pd.Series:
    """The video of each pair: the manifest's `video` column, else the folder of frame a
    (data/frames/<video>/NNNNNN.jpg)."""
    pairs = read_pairs(pairs_path)
    if "video" in pairs.columns:
        return pairs["video"]
    return pairs["path_a"].map(lambda p: str(PurePath(p).parent))


def image_instances(folder: Path, images: list[str]) -> pd.Series | None:
    """The object instance of each image of a corpus from its `annotations.csv` (`path` relative to
    the corpus, `instance`, one row per image, as the world's object-centric corpus writes it); None
    when the corpus has no such file or it does not name every image once."""
    table = folder / "annotations.csv"
    if not table.is_file():
        return None
    try:
        rows = pd.read_csv(table)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return None
    if not {"path", "instance"} <= set(rows.columns) or rows["path"].duplicated().any():
        return None
    instance = dict(zip(rows["path"].astype(str), rows["instance"], strict=True))
    relative = [Path(p).relative_to(folder).as_posix() for p in images]
    if any(r not in instance for r in relative):
        return None
    return pd.Series([instance[r] for r in relative])


def _outside(entry) -> bool:
    """Whether a frame path of the manifest would leave the frames folder (the rule of
    demystify.data.check_entry, kept here so pretrain needs nothing outside ssl/)."""
    if not isinstance(entry, str) or not entry or "\0" in entry:
        return True
    return PurePath(entry).is_absolute() or ".." in PurePath(entry).parts


def has_frame_hashes(columns) -> bool:
    return {"md5_a", "md5_b"} <= set(columns)


def _verify_frames(pairs: pd.DataFrame, pairs_path: Path, store: frames_store.FrameStore) -> None:
    recorded = dict(zip(pairs["path_a"], pairs["md5_a"], strict=True)) | dict(
        zip(pairs["path_b"], pairs["md5_b"], strict=True)
    )
    changed = [p for p, md5 in sorted(recorded.items()) if store.md5(p) != md5]
    if changed:
        raise DataError(
            f"{pairs_path}: {len(changed)} frame(s) changed since the pairs were mined, e.g. "
            f"{', '.join(changed[:3])} (rerun mine_pairs: `dvc repro mine_pairs`)"
        )


def _region(img: torch.Tensor, box) -> tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) part of `img` a view is cut from: the item's box rounded outwards (the
    whole image without a box, or when the box is under 2 pixels)."""
    h, w = img.shape[-2:]
    bounds = None if box is None else box_bounds(box, w, h)
    return (0, 0, w, h) if bounds is None else bounds


def _crop(img: torch.Tensor, box) -> torch.Tensor:
    x0, y0, x1, y1 = _region(img, box)
    return img[:, y0:y1, x0:x1]


class ViewsDataset(Dataset):
    """One transformed view of each item's first image (its box, if any) and the item's label: the
    kNN monitor's bank and queries. Training reads DecodedViews, augmented a batch at a time."""

    def __init__(self, items: list[Item], transform, seed: int):
        self.items, self.transform, self.seed = items, transform, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]):
        i, pass_ = key if isinstance(key, tuple) else (key, 0)
        it = self.items[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(zlib.crc32(f"{self.seed}/{pass_}/{i}".encode()))
            return self.transform(_crop(decode_rgb(it.path_a, DataError), it.box_a)), it.label


class DecodedViews(Dataset):
    """What the batched augmentation (batch_augment.BatchMoCoV2) needs of each sample: the decoded
    uint8 image(s), the region of each view, and the sample's uniforms, seeded by (seed, pass,
    index). `resident`: every image is decoded once, at the start, and held (the default corpora
    are small); otherwise each read decodes from disk (loader workers can stream a big corpus).
    Collate with `collate_views`."""

    def __init__(self, items: list[Item], seed: int, labelled: bool = False, resident: bool = True):
        self.items, self.seed, self.labelled = items, seed, labelled
        self.views = 1 if labelled else 2
        self._decoded: dict[str, torch.Tensor] | None = None
        self.resident = resident
        if resident:
            paths = dict.fromkeys(p for it in items for p in (it.path_a, it.path_b) if p)
            self._decoded = {p: self._read(p) for p in paths}

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def _read(path: str) -> torch.Tensor:
        return decode_rgb(path, DataError)

    def _image(self, path: str) -> torch.Tensor:
        return self._decoded[path] if self._decoded is not None else self._read(path)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        from demystify.ssl.batch_augment import sample_uniforms

        i, pass_ = key if isinstance(key, tuple) else (key, 0)
        it = self.items[i]
        first = self._image(it.path_a)
        views = [(it.path_a, first, it.box_a)]
        if not self.labelled:  # the second view: the pair's other frame, or the same image again
            views.append((it.path_b, self._image(it.path_b), it.box_b) if it.path_b else views[0])
        return {
            "paths": [v[0] for v in views],
            "images": [v[1] for v in views],
            "regions": [_region(v[1], v[2]) for v in views],
            "uniforms": sample_uniforms(self.seed, pass_, i, self.views),
            "label": it.label,
        }


# a batch whose whole images take up to this is built from them: roi_align then samples every view at
# its image's own coordinates, bit for bit the views the sample gets in any other batch (or process)
WHOLE_BATCH_BYTES = 64 * 2**20


def collate_views(samples: list[dict], crop_boxes) -> dict[str, torch.Tensor]:
    """One batch: `images` uint8 [P, 3, H, W], `sources` [V, B] (the index into `images` of each view
    of each sample), `regions` [V, B, 4] (the sample's region in it), `uniforms` [V, B, U], `labels`
    [B]. `crop_boxes` is the augmentation's (BatchMoCoV2.crop_boxes).

    Whole images (each once, padded to the largest by repeating its last row and column, so a crop
    that ends at the image's edge resamples like torchvision's clamped resize) while they take at
    most WHOLE_BATCH_BYTES, or no more than the crops would. Otherwise each view's crop box is cut
    out (+ 1 pixel each side: what bilinear sampling reads around it, the image's edge repeated
    outside it) and packed into pages as large as the largest crop (`_shelves`), so one huge image
    no longer pads every image of its batch to its size; the region moves with the crop, and from
    the moved region `crop_boxes` draws the moved box: the augmentation reads the same pixels.
    (Only the float32 rounding of roi_align's sample positions differs, ~1e-5 of a pixel.)"""
    views = len(samples[0]["paths"])
    regions = torch.tensor(
        [[s["regions"][v] for s in samples] for v in range(views)], dtype=torch.float64
    )
    uniforms = torch.from_numpy(np.stack([s["uniforms"] for s in samples], axis=1))
    batch = {
        "regions": regions,
        "uniforms": uniforms,
        "labels": torch.tensor([s["label"] for s in samples]),
    }
    slots = _distinct_images(samples)
    whole = (
        len(slots)
        * 3
        * max(im.shape[1] for im in slots.values())
        * max(im.shape[2] for im in slots.values())
    )
    if whole <= WHOLE_BATCH_BYTES:
        return batch | _whole_images(samples, slots)
    boxes = [
        b
        for v in range(views)
        for b in crop_boxes(regions[v], uniforms[v].to(torch.float64)).long().tolist()
    ]
    packed = _packed_crops(samples, regions, boxes, whole)
    return batch | (packed if packed is not None else _whole_images(samples, slots))


def _distinct_images(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Each image of the batch once, by path, in the order the samples first show it."""
    slots: dict[str, torch.Tensor] = {}
    for s in samples:
        slots.update(
            (path, img)
            for path, img in zip(s["paths"], s["images"], strict=True)
            if path not in slots
        )
    return slots


def _packed_crops(
    samples: list[dict], regions: torch.Tensor, boxes: list, whole: int
) -> dict[str, torch.Tensor] | None:
    """Each view's crop box (+ 1 pixel each side) cut out and packed into pages (`_shelves`), the
    regions moved with them; None when the pages would take no fewer bytes than `whole`."""
    views = regions.shape[0]
    sizes = [(y1 - y0 + 2, x1 - x0 + 2) for x0, y0, x1, y1 in boxes]
    page_h, page_w = max(h for h, _ in sizes), max(w for _, w in sizes)
    places = _shelves(sizes, page_h, page_w)
    count = max(p for p, _, _ in places) + 1
    if count * 3 * page_h * page_w >= whole:
        return None
    pages = torch.zeros(count, 3, page_h, page_w, dtype=torch.uint8)
    moved = regions.clone().view(-1, 4)  # [V * B, 4], view-major like `boxes`
    for k, ((x0, y0, x1, y1), (page, y, x)) in enumerate(zip(boxes, places, strict=True)):
        img = samples[k % len(samples)]["images"][k // len(samples)]
        rows = torch.arange(y0 - 1, y1 + 1).clamp_(0, img.shape[1] - 1)
        cols = torch.arange(x0 - 1, x1 + 1).clamp_(0, img.shape[2] - 1)
        pages[page, :, y : y + len(rows), x : x + len(cols)] = img[:, rows][:, :, cols]
        moved[k] += torch.tensor([x + 1 - x0, y + 1 - y0] * 2, dtype=torch.float64)
    return {
        "images": pages,
        "sources": torch.tensor([p for p, _, _ in places]).view(views, len(samples)),
        "regions": moved.view(views, len(samples), 4),
    }


def _whole_images(samples: list[dict], slots: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    index = {path: k for k, path in enumerate(slots)}
    images = list(slots.values())
    h, w = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    stack = torch.empty(len(images), 3, h, w, dtype=torch.uint8)
    for k, im in enumerate(images):  # padded by repeating the last row and column
        ih, iw = im.shape[1:]
        stack[k, :, :ih, :iw] = im
        stack[k, :, ih:, :iw] = im[:, -1:, :]
        stack[k, :, :, iw:] = stack[k, :, :, iw - 1 : iw]
    return {
        "images": stack,
        "sources": torch.tensor(
            [[index[s["paths"][v]] for s in samples] for v in range(len(samples[0]["paths"]))]
        ),
    }


def _shelves(sizes: list, page_h: int, page_w: int) -> list[tuple[int, int, int]]:
    """(page, y, x) of each (h, w) cell: tallest first, left to right in rows (shelves) as tall as
    their first cell, a new page when a page is full. One huge crop gets a page of its own and the
    small ones share pages, so the batch's memory follows the sum of its crops."""
    places: list[tuple[int, int, int]] = [(0, 0, 0)] * len(sizes)
    page, y, x, shelf = 0, 0, 0, 0
    for k in sorted(range(len(sizes)), key=lambda k: (-sizes[k][0], k)):
        h, w = sizes[k]
        if x + w > page_w:  # next shelf
            y, x, shelf = y + shelf, 0, 0
        if y + h > page_h:  # next page
            page, y, x, shelf = page + 1, 0, 0, 0
        places[k] = (page, y, x)
        x, shelf = x + w, max(shelf, h)
    return places
