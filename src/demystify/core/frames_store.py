"""The extracted frames, as every reader sees them: `<root>/shard-K/<video>.zip`, one uncompressed zip
per video (members NNNNNN.jpg, stored: the JPEG bytes ffmpeg wrote), beside each shard's
manifest.parquet and rejected.csv. DVC hashes one file per video instead of one per frame.

A frame's address stays `<video>/NNNNNN.jpg` (the frames manifest's `path`, the pairs manifest's
`path_a`/`path_b`), whatever the shard: the shard is found by looking, not stored, so the pairs
manifest keeps its bytes when the shard count changes. A root is a folder of `shard-*` folders, or
one such part itself (a shard folder, or a folder of loose `<video>/NNNNNN.jpg` files as hand-made
sets and older runs have: read too, so one reader serves both).

Readers that want a path (the image decoder, the training items) get `<part>/<video>.zip/NNNNNN.jpg`:
`image_source`/`read_bytes` read such a path out of its zip, any other path from the disk. Open zips
are kept per process (LRU of MAX_OPEN handles); a forked loader worker never uses its parent's
handles (a shared file offset would interleave their reads).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from demystify.core import digests

SHARD_PREFIX = "shard-"
MANIFEST = "manifest.parquet"
REJECTED = "rejected.csv"
ZIP_SUFFIX = ".zip"
MAX_OPEN = 64  # zip handles kept open per process
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every member's timestamp: equal frames give equal zip bytes


class FramesError(ValueError):
    """A frame or frames folder that cannot be read; the message names it."""


# ---------------------------------------------------------------- shards


def shard_of(video: str, count: int) -> int:
    """The shard of a video id ('sub/clip'): its MD5 mod `count`, so a video keeps its shard whatever
    other videos come or go (a new video changes one shard's outputs)."""
    digest = hashlib.md5(video.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def shard_name(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}"


def parts(root: str | Path) -> list[Path]:
    """The shard folders of `root` (by number), or [root] when it has none (one shard, or loose frames)."""
    root = Path(root)
    found = [
        p
        for p in root.glob(f"{SHARD_PREFIX}*")
        if p.is_dir() and p.name[len(SHARD_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(SHARD_PREFIX) :])) or [root]


def read_manifest(root: str | Path) -> pd.DataFrame:
    """Every part's manifest.parquet as one table, in shard order, each part's rows as written (not
    re-sorted: check_data must see a part's own order); FramesError naming the first part without one."""
    tables = []
    for part in parts(root):
        path = part / MANIFEST
        if not path.is_file():
            raise FramesError(f"{path}: frames manifest not found (run extract_frames first)")
        tables.append(pd.read_parquet(path))
    if len(tables) > 1:
        _one_part_each([v for t in tables if "video" in t for v in t["video"].unique()], root)
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]


def _one_part_each(videos: list[str], root: str | Path) -> None:
    """A video in two shard folders: a shard of an older `frames.shards` is still there (plain `dvc repro`
    never deletes a removed shard's output); its frames would count twice, so refuse by name."""
    seen: set[str] = set()
    twice = []
    for video in videos:
        if video in seen:
            twice.append(video)
        seen.add(video)
    if twice:
        raise FramesError(
            f"{root}: {len(twice)} video(s) in more than one shard folder (first: {twice[0]}): a "
            "shard of an earlier frames.shards is left over; remove it with `python -m "
            "demystify.tools.leftovers` (make run does) and rerun"
        )


# ---------------------------------------------------------------- writing


def write_video_zip(target: Path, frames: Iterable[Path]) -> None:
    """The JPEG files `frames` as members of one stored (uncompressed) zip at `target`, written to a
    dot-prefixed temporary and renamed (io.remove_stale_temporaries drops a killed run's). Fixed
    timestamps and modes: the same frames give the same zip bytes, so DVC sees no change."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for frame in frames:
                info = zipfile.ZipInfo(frame.name, date_time=_ZIP_TIME)
                info.external_attr = 0o644 << 16
                zf.writestr(info, frame.read_bytes(), compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- reading

_open: OrderedDict[str, zipfile.ZipFile] = OrderedDict()
_open_pid = os.getpid()


def _zip(path: str) -> zipfile.ZipFile:
    global _open_pid
    if _open_pid != os.getpid():  # a forked worker: the parent's handles share its file offsets
        _open.clear()
        _open_pid = os.getpid()
    zf = _open.get(path)
    if zf is not None:
        _open.move_to_end(path)
        return zf
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FramesError(f"{path}: cannot open frames zip ({type(exc).__name__}: {exc})") from None
    _open[path] = zf
    if len(_open) > MAX_OPEN:
        _open.popitem(last=False)[1].close()
    return zf


def split_address(path: str | Path) -> tuple[str, str] | None:
    """(zip, member) of a path through a frames zip ('.../clip.zip/000003.jpg'), None for any other
    path (a file that exists on disk is never taken for a zip member)."""
    text = str(path)
    if ZIP_SUFFIX + "/" not in text or os.path.exists(text):
        return None
    container, member = text.rsplit(ZIP_SUFFIX + "/", 1)
    return container + ZIP_SUFFIX, member


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file, or of a frame inside a frames zip (a path from `address`)."""
    split = split_address(path)
    if split is None:
        return Path(path).read_bytes()
    container, member = split
    try:
        return _zip(container).read(member)
    except KeyError:
        raise FramesError(f"{path}: no frame {member} in {container}") from None


def image_source(path: str | Path) -> str | io.BytesIO:
    """What PIL's Image.open should get: a zip member's bytes in memory, any other path as it is (so
    PIL opens and closes the file itself)."""
    return str(path) if split_address(path) is None else io.BytesIO(read_bytes(path))


def container(path: str | Path) -> str:
    """The file on disk that holds `path`: its zip for a frame address, else the path itself (what a
    digest of the files a run reads must hash)."""
    split = split_address(path)
    return str(path) if split is None else split[0]


def frame_md5(data: bytes) -> str:
    """The MD5 a frame is recorded by (pairs manifest `md5_a`/`md5_b`): of its JPEG bytes. The one
    place frames are hashed, so a cached digest can replace it."""
    return hashlib.md5(data).hexdigest()


class FrameStore:
    """The frames under one root, addressed `<video>/NNNNNN.jpg`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.parts = parts(self.root)
        self._where: dict[str, tuple[Path, bool] | None] = {}  # video -> (zip or folder, is_zip)

    def _locate(self, video: str) -> tuple[Path, bool] | None:
        if video not in self._where:
            found = None
            for part in self.parts:
                if (part / f"{video}{ZIP_SUFFIX}").is_file():
                    found = (part / f"{video}{ZIP_SUFFIX}", True)
                    break
                if (part / video).is_dir():
                    found = (part / video, False)
                    break
            self._where[video] = found
        return self._where[video]

    def address(self, frame: str) -> str:
        """A path the image decoders (demystify.core.images) and `read_bytes` read the frame from."""
        video, _, name = frame.rpartition("/")
        where = self._locate(video) if video else None
        if where is None:
            return str(self.root / frame)  # absent: the caller's is_file check or read names it
        return f"{where[0]}/{name}"

    def exists(self, frame: str) -> bool:
        video, _, name = frame.rpartition("/")
        where = self._locate(video) if video else None
        if where is None:
            return False
        if not where[1]:
            return (where[0] / name).is_file()
        try:
            return name in _zip(str(where[0])).NameToInfo
        except FramesError:
            return False

    def read(self, frame: str) -> bytes:
        """The JPEG bytes of a frame; FramesError naming it when it is not there."""
        try:
            return read_bytes(self.address(frame))
        except OSError as exc:
            raise FramesError(
                f"{self.root / frame}: cannot read frame ({exc.strerror or exc})"
            ) from None

    def md5(self, frame: str) -> str:
        """The frame's MD5 (of its JPEG bytes, as frame_md5) through the node's digest cache
        (demystify.core.digests): a verification after mining reads no frame again."""
        video, _, name = frame.rpartition("/")
        where = self._locate(video) if video else None
        try:
            if where is None or not where[1]:
                return digests.file_md5(self.address(frame))
            members = digests.member_md5s(where[0])
        except (OSError, zipfile.BadZipFile) as exc:
            raise FramesError(
                f"{self.root / frame}: cannot read frame ({getattr(exc, 'strerror', None) or exc})"
            ) from None
        if name not in members:
            raise FramesError(
                f"{self.root / frame}: cannot read frame (no member {name} in {where[0]})"
            )
        return members[name]

    def videos(self) -> Iterator[tuple[str, Path]]:
        """(video id, zip) of every frames zip under the root, sorted by video id."""
        found = []
        for part in self.parts:
            found += [
                (z.relative_to(part).with_suffix("").as_posix(), z)
                for z in part.rglob(f"*{ZIP_SUFFIX}")
                if not z.name.startswith(".")
            ]
        _one_part_each([v for v, _ in found], self.root)
        return iter(sorted(found))

    def frame_addresses(self) -> list[tuple[str, str]]:
        """(frame, address) of every frame in every zip, sorted by frame: the corpus order does not
        depend on the shard count."""
        out = []
        for video, z in self.videos():
            out += [(f"{video}/{m}", f"{z}/{m}") for m in sorted(_zip(str(z)).NameToInfo)]
        return out


def is_sharded(root: str | Path) -> bool:
    """Whether `root` holds frames zips (shard folders of them, or a shard folder itself)."""
    root = Path(root)
    return (
        parts(root) != [root]
        or (root / MANIFEST).is_file()
        and next(root.rglob(f"*{ZIP_SUFFIX}"), None) is not None
    )


def decode_bgr(data: bytes):
    """A frame's bytes as OpenCV's BGR uint8 array (cv2.imdecode: the pixels cv2.imread gives the
    same file), or None when they are no image."""
    import cv2
    import numpy as np

    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
