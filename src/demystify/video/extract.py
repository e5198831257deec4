"""Frame extraction: a folder of videos -> `<out>/<video>.zip` (members NNNNNN.jpg) + the frames manifest.

ffmpeg does all per-frame work (decode, resample to `fps`, resize, JPEG encode); Python only
plans, checks and records. Each video is decoded into a temporary folder and stored, uncompressed,
as one zip written to a temporary name and renamed (demystify.core.frames_store), so a killed run leaves
only dot-prefixed temporaries (removed at the next start), never a half-written video.
With a shard (index, count), only the videos whose id hashes to that shard are decoded (names are
still planned over every video, so the rules below hold across shards). Under DVC the shard's videos
come from plan_shards' list (video.shards): named there over every video, decoded here only if
their MD5 still matches it, so a new video reruns its own shard alone.
A bad video is rejected with ffmpeg's reason and never stops the others. A fault of the output
side (a full disk, a read-only or unwritable frames folder) is never the video's: it stops the
stage (OutputError) before any table is written, and every frames folder already in place stays.

A frame byte for byte equal to the one before it is flagged `duplicate`: ffmpeg's fps resampling
repeats the last frame to fill a timestamp gap (a 10-minute jump in a 2 s clip gives 3,010 frames,
11 of them distinct), so a video with more than `frames.max_duplicate_share` of them is rejected.

Names are planned before any decoding: a file name that is not UTF-8, a frames folder that would
be another video's (or one of its parents, or an output file), or a folder name like '.' or '..'
rejects that file by name (the first in sorted order keeps the folder), so no video's frames can
be deleted or overwritten by another's.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import math
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from demystify import machine
from demystify.core import digests, frames_store
from demystify.core.config import FramesParams
from demystify.core.ffmpeg_bin import ffmpeg_exe
from demystify.core.io import (
    atomic_dir,
    remove_stale_temporaries,
    worker_context,
    write_csv,
    write_json,
    write_parquet,
)
from demystify.data import got10k, trackingnet
from demystify.video.probe import VideoError, VideoInfo, ffmpeg_reason, probe

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpeg", ".mpg", ".m4v"})

MANIFEST_DTYPES: dict[str, str] = {
    "video": "object",
    "frame": "int64",
    "time_s": "float64",
    "path": "object",
    "width": "int64",
    "height": "int64",
    "duplicate": "bool",  # byte-identical to the video's previous frame (a gap or frozen picture)
    "x": "float64",
    "y": "float64",
    "w": "float64",
    "h": "float64",
    "cover": "Int64",
    "absence": "Int64",
    "track": "Int64",
}
REJECTED_COLUMNS = ["file", "reason"]
OUTPUT_NAMES = frozenset({"manifest.parquet", "rejected.csv"})  # the stage's own files in out_root
TRUNCATION_MARGIN = 0.1  # share of the header's duration a video may fall short by
_GT_FLOAT = ["x", "y", "w", "h"]
_GT_INT = ["cover", "absence", "track"]


class ExtractionError(RuntimeError):
    """The stage as a whole failed (no video, or too many rejected); outputs are written."""


class OutputError(ExtractionError):
    """Frames cannot be written (no space, read-only, no permission): the stage's fault, never a
    video's. Raised before manifest or rejected.csv is written, so the last good ones stay."""


@dataclass(frozen=True)
class _Job:
    path: Path
    file: str  # relative to the videos root, for the rejected table
    video: str
    out_zip: Path  # <out>/<video>.zip
    params: FramesParams  # fps, size, jpeg_quality, decode_timeout_s, max_duplicate_share
    threads: int = 0  # ffmpeg threads per video; 0 = ffmpeg's own choice


# ---------------------------------------------------------------- discovery


def find_videos(root: str | Path) -> list[Path]:
    """Every file under `root` with a video extension, sorted; broken links and unreadable
    files included on purpose, so they are rejected by name instead of silently missing."""
    root = Path(root)
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        for name in filenames:
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(Path(dirpath) / name)
        # os.walk lists a broken symlink under dirnames only if it points to a directory;
        # a broken link is never a directory, so it is already in filenames.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def video_id(path: str | Path, root: str | Path) -> str:
    """Posix path of `path` relative to `root`, without the suffix ('sub/clip')."""
    return Path(path).relative_to(root).with_suffix("").as_posix()


# ---------------------------------------------------------------- one video


def output_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Frame size with the short side = `size`, aspect kept (nearest integer, half up)."""
    scale = size / min(width, height)
    return max(1, math.floor(width * scale + 0.5)), max(1, math.floor(height * scale + 0.5))


def _check_readable(path: Path) -> None:
    # ffmpeg's message for these is vague; Python's errno names the actual problem.
    try:
        mode = os.stat(path).st_mode  # follows a link: its target must be a regular file
        if not stat.S_ISREG(mode):
            # Opening a FIFO (or a device) blocks, or reads forever: never hand it to ffmpeg.
            raise VideoError(
                f"not a regular file ({_file_kind(mode)}); only regular files are decoded"
            )
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise VideoError(f"unreadable: [Errno {exc.errno}] {exc.strerror}") from None


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a file")


def extract_video(
    path: str | Path,
    out_dir: str | Path,
    params: FramesParams,
    info: VideoInfo | None = None,
    threads: int = 0,
) -> pd.DataFrame:
    """Decode `path` to `out_dir/%06d.jpg` at `params.fps`, short side `params.size`, JPEG
    `-q:v params.jpeg_quality`.

    Returns one row per frame (frame, time_s, width, height, duplicate). Any decode error, no frame
    at all, a decode longer than `params.decode_timeout_s` or more than `params.max_duplicate_share`
    of the frames equal to their predecessor raises VideoError and leaves no `out_dir` behind; a
    fault of the output folder raises OutputError and leaves an older `out_dir` as it was.
    """
    path = Path(path)
    info = info or probe(path)
    width, height = output_size(info.width, info.height, params.size)
    out_dir = Path(out_dir)
    try:
        with atomic_dir(out_dir) as tmp:
            _run_ffmpeg(path, tmp, (width, height), params, threads)
            count = sum(1 for _ in tmp.glob("*.jpg"))
            if count == 0:
                raise VideoError("decoded to 0 frames")
            _check_complete(count, params.fps, info)
            duplicate = _repeats(tmp, count)
            _check_duplicates(duplicate, params.fps, params.max_duplicate_share)
    except OSError as exc:  # making, reading back or renaming our own folder: never the video's
        raise OutputError(_output_message(out_dir.parent, _strerror(exc), path)) from None
    frames = np.arange(count, dtype=np.int64)
    return pd.DataFrame(
        {
            "frame": frames,
            "time_s": frames / params.fps,
            "width": width,
            "height": height,
            "duplicate": duplicate,
        }
    )


def _repeats(folder: Path, count: int) -> np.ndarray:
    """Per frame: are its JPEG bytes those of the frame before? The same decoded picture encodes to
    the same bytes, so this finds exactly the frames ffmpeg's fps filter repeated (a gap in the
    timestamps, a source slower than `fps`) and a picture frozen in the source."""
    digests = [hashlib.md5((folder / f"{i:06d}.jpg").read_bytes()).digest() for i in range(count)]
    return np.array([False] + [a == b for a, b in itertools.pairwise(digests)], dtype=bool)


def _check_duplicates(duplicate: np.ndarray, fps: float, max_share: float) -> None:
    share = float(duplicate.mean())
    if share <= max_share:
        return
    # The longest run of repeats: its length is the gap (or the freeze) in seconds, its start where.
    edges = np.diff(np.concatenate([[0], duplicate.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    i = int(np.argmax(ends - starts))
    raise VideoError(
        f"mostly repeated frames: {int(duplicate.sum())} of {len(duplicate)} ({share:.1%}) equal the frame "
        f"before (> frames.max_duplicate_share {max_share:g}); longest run {(ends[i] - starts[i]) / fps:.1f} s "
        f"from {(starts[i] - 1) / fps:.1f} s: a timestamp gap, a frozen picture or a source slower than frames.fps"
    )


def _check_complete(count: int, fps: float, info: VideoInfo) -> None:
    """A file cut at a packet boundary decodes without any error, just short: compare with
    the duration its header promises. The margin absorbs container/stream duration gaps
    (e.g. an audio track a little longer than the video)."""
    if info.duration_s is None:
        return
    expected = info.duration_s * fps
    if count < math.floor(expected * (1 - TRUNCATION_MARGIN)) - 1:
        raise VideoError(
            f"truncated: decoded {count} frames, the header's duration "
            f"{info.duration_s:.2f} s implies {expected:.0f} at {fps:g} fps"
        )


def _image2_pattern(folder: Path) -> str:
    """ffmpeg's image2 muxer reads every '%' of its output name as a pattern ('my%20clip/'
    fails with "Error muxing a packet"): the folder's own '%' are written '%%'. Absolute, so
    no name (a leading '-', a 'name:' like a protocol) is read as anything but a path."""
    return os.path.abspath(folder).replace("%", "%%") + "/%06d.jpg"


def _ffmpeg_args(
    path: Path, out: Path, size: tuple[int, int], params: FramesParams, threads: int
) -> list[str]:
    """ffmpeg's command line: decode `path`, resample to params.fps, scale to `size` (width,
    height), JPEG at params.jpeg_quality into `out`."""
    import ffmpeg

    # With one ffmpeg per core already running, ffmpeg's default of a thread pool per process
    # oversubscribes the cores (measured: about 10% slower on 2 cores, see BENCHMARKS.md).
    stream = (
        ffmpeg.input(os.path.abspath(path), threads=threads)
        .filter("fps", fps=params.fps)
        .filter("scale", *size)
        # Standard Huffman tables: ffmpeg's default computes optimal ones per frame, a second
        # pass that costs about 5% of the whole extraction for a few % smaller files.
        .output(
            _image2_pattern(out),
            start_number=0,
            threads=threads,
            huffman="default",
            **{"q:v": params.jpeg_quality},
        )
    )
    args = stream.compile(cmd=ffmpeg_exe())
    # Global options go before the input: ffmpeg ignores trailing ones. -xerror turns a
    # decode error (truncated or corrupt data) into a non-zero exit instead of a short video.
    args[1:1] = ["-hide_banner", "-nostdin", "-v", "error", "-xerror"]
    return args


def _run_ffmpeg(
    path: Path, out: Path, size: tuple[int, int], params: FramesParams, threads: int = 0
) -> None:
    """Run ffmpeg (_ffmpeg_args) within params.decode_timeout_s; a failure is the video's
    (VideoError) or the output side's (OutputError)."""
    args = _ffmpeg_args(path, out, size, params, threads)
    timeout_s = params.decode_timeout_s
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, errors="replace", timeout=timeout_s
        )
    except subprocess.TimeoutExpired:  # ffmpeg is killed; atomic_dir drops its partial frames
        raise VideoError(f"timed out after {timeout_s:g} s (frames.decode_timeout_s)") from None
    except OSError as exc:  # not the output's fault (nor the video's): ffmpeg itself cannot start
        raise ExtractionError(f"cannot run ffmpeg {args[0]}: {_strerror(exc)}") from None
    if proc.returncode != 0:
        cause = output_fault(proc.stderr, out)
        if cause is not None:
            raise OutputError(_output_message(out.parent, cause, path))
        raise VideoError(ffmpeg_reason(proc.stderr, default=f"ffmpeg exit {proc.returncode}"))


# ---------------------------------------------------------------- the output side

# Errors no input can cause: the file system under the frames folder is at fault.
_DISK_ERRORS = tuple(os.strerror(e) for e in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG))
# Any errno ffmpeg reports in these words (its av_strerror is strerror's text), read off its output.
_ERRNO_TEXTS = _DISK_ERRORS + tuple(
    os.strerror(e)
    for e in (
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EMFILE,
    )
)
# ffmpeg's words for a failure of writing its output (the image2 muxer, one file per frame). The
# input was opened and probed already, so a "Permission denied" beside these is the output's.
_WRITE_MARKERS = (
    "Error muxing",
    "Error writing",
    "to the muxer",
    "Could not open file",
    "av_interleaved_write_frame",
    "Error closing",
)


def output_fault(stderr: str, folder: Path) -> str | None:
    """The cause when a failed ffmpeg run is the output side's fault, else None (the video's).

    The folder is tried first (a small file written and fsynced): a folder that takes no write
    names its errno whatever ffmpeg said. Then ffmpeg's own words: a disk error (no space, quota,
    read-only, file too large) anywhere, or any error beside a write/mux failure."""
    probed = _probe_folder(folder)
    if probed is not None:
        return probed
    found = next((t for t in _ERRNO_TEXTS if t in stderr), None)
    if found in _DISK_ERRORS:
        return found
    if any(m in stderr for m in _WRITE_MARKERS):
        return found or ffmpeg_reason(stderr)
    return None


def _probe_folder(folder: Path) -> str | None:
    probe_file = folder / ".write-probe"
    try:
        fd = os.open(probe_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)  # a full disk may accept the write into the page cache and fail only here
        finally:
            os.close(fd)
    except OSError as exc:
        return _strerror(exc)
    finally:
        try:
            probe_file.unlink(missing_ok=True)
        except OSError:
            pass
    return None


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _output_message(folder: Path, cause: str, video: Path) -> str:
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    return (
        f"cannot write frames to {folder}: {cause} (while extracting {video.name}; {free}); "
        "no video was rejected for it: fix the output side and rerun"
    )


# ---------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class GroundTruth:
    boxes: pd.DataFrame  # got10k.read_annotations rows
    rate: float | None  # annotation rows per second; None: one per video frame
    resolution: tuple[int, int] | None  # the boxes' pixel frame; None: the video's


def read_sidecar(path: Path) -> GroundTruth | None:
    """Ground truth of `X.mp4`, if it has any: the GOT-10k sequence folder `X/` beside it, or a
    TrackingNet box file `anno/X.txt` beside it or beside its folder (one row per video frame).
    A file that cannot be read (not UTF-8, a line that is not four numbers, a bad label or
    `anno_fps`) raises AnnotationError naming it; a row without a box (NaN, inf, w or h <= 0)
    is kept as a frame without a box."""
    seq = path.with_suffix("")
    if not (seq / "groundtruth.txt").is_file():
        for anno in (path.parent / "anno", path.parent.parent / "anno"):
            if (anno / f"{path.stem}.txt").is_file():
                boxes = trackingnet.read_annotations(anno.parent, path.stem)
                return GroundTruth(boxes, None, None) if len(boxes) else None
        return None
    boxes = got10k.read_annotations(seq)
    meta_path = seq / "meta_info.ini"
    meta = got10k.read_meta(seq) if meta_path.is_file() else {}
    rate = got10k.anno_fps(meta, source=str(meta_path))
    return GroundTruth(boxes, rate, got10k.resolution(meta)) if len(boxes) else None


def attach_ground_truth(
    frames: pd.DataFrame, gt: GroundTruth | None, info: VideoInfo
) -> pd.DataFrame:
    """Add x, y, w, h (scaled to the frame size), cover, absence, track (NA without GT).

    A frame past the end of the ground truth (a test split's single first-frame box, a file
    shorter than the video) has no annotation at all: all seven columns NA. A frame whose row
    holds no box has NaN x, y, w, h and keeps its labels."""
    frames = frames.copy()
    n = len(frames)
    if gt is None:
        for col in _GT_FLOAT:
            frames[col] = np.nan
        for col in _GT_INT:
            frames[col] = pd.array([pd.NA] * n, dtype="Int64")
        return frames
    rate = gt.rate or info.fps
    src_w, src_h = gt.resolution or (info.width, info.height)
    times = frames["time_s"].to_numpy()
    picked = gt.boxes.iloc[got10k.nearest_rows(times, rate, len(gt.boxes))]
    known = got10k.annotated(times, rate, len(gt.boxes))
    boxes = got10k.without_invalid(picked[_GT_FLOAT].to_numpy(float))
    boxes[~known] = np.nan
    sx = frames["width"].to_numpy() / src_w
    sy = frames["height"].to_numpy() / src_h
    for i, (col, scale) in enumerate([("x", sx), ("y", sy), ("w", sx), ("h", sy)]):
        frames[col] = boxes[:, i] * scale
    for col in ("cover", "absence"):
        frames[col] = pd.array(picked[col].to_numpy(), dtype="Int64")
    frames["track"] = pd.array(np.zeros(n, dtype=np.int64), dtype="Int64")  # GOT: one object
    for col in _GT_INT:
        frames.loc[~known, col] = pd.NA
    return frames


# ---------------------------------------------------------------- a folder


def _process(job: _Job) -> tuple[str, pd.DataFrame | None, str | None]:
    """Worker: (file, manifest rows, None) or (file, None, reason). Never raises on bad data."""
    try:
        _check_readable(job.path)
        info = probe(job.path)
        gt = read_sidecar(job.path)  # a bad sidecar fails before any decoding
        frames = _extract_zip(job, info)
        frames = attach_ground_truth(frames, gt, info)
    except (VideoError, got10k.AnnotationError) as exc:
        # An older run's frames of this video must not outlive its rejection.
        job.out_zip.unlink(missing_ok=True)
        return job.file, None, str(exc)
    frames.insert(0, "video", job.video)
    frames.insert(3, "path", [f"{job.video}/{i:06d}.jpg" for i in frames["frame"]])
    return job.file, frames, None


def _extract_zip(job: _Job, info: VideoInfo) -> pd.DataFrame:
    """extract_video into a temporary folder beside the zip, then the frames as `job.out_zip`."""
    try:
        job.out_zip.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(
            prefix=f".{job.out_zip.stem}.tmp-", dir=job.out_zip.parent
        )
    except OSError as exc:
        raise OutputError(_output_message(job.out_zip.parent, _strerror(exc), job.path)) from None
    with scratch as tmp:
        folder = Path(tmp) / "frames"
        try:
            frames = extract_video(job.path, folder, job.params, info, job.threads)
        except OutputError as exc:  # it names the scratch folder, ours: the frames folder instead
            raise OutputError(str(exc).replace(tmp, str(job.out_zip.parent), 1)) from None
        try:
            frame_files = [folder / f"{i:06d}.jpg" for i in frames["frame"]]
            frames_store.write_video_zip(job.out_zip, frame_files)
        except OSError as exc:
            raise OutputError(
                _output_message(job.out_zip.parent, _strerror(exc), job.path)
            ) from None
    return frames


def _plan(
    videos: Iterable[Path],
    root: Path,
    out_root: Path,
    params: FramesParams,
    workers: int,
    shard: tuple[int, int] | None = None,
):
    """Jobs for the videos whose frames are theirs alone; (file, reason) for the others, decided
    here, before any decoding (sorted order: the first file keeps a contested name). With a shard
    (index, count), the names are planned over every video and only that shard's are returned."""
    accepted, rejected = plan_names(videos, root)
    jobs = _jobs(accepted, root, out_root, params, workers)
    if shard is not None:
        index, count = shard
        jobs = [j for j in jobs if frames_store.shard_of(j.video, count) == index]
        rejected = [r for r in rejected if frames_store.shard_of(_id_of(r[0]), count) == index]
    return jobs, rejected


def plan_names(videos: Iterable[Path], root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(the files, relative to `root`, whose frames folder is theirs alone; (file, reason) for the
    others): the naming rules, decided over every video at once, in sorted order."""
    accepted: list[str] = []
    rejected: list[tuple[str, str]] = []
    owner: dict[str, str] = {}  # frames folder (video id) -> the file decoded into it
    under: dict[str, str] = {}  # every parent folder of an accepted id -> one file below it
    for path in videos:
        file, vid = path.relative_to(root).as_posix(), video_id(path, root)
        reason = _name_problem(file, vid, owner, under)
        if reason is not None:
            rejected.append((printable(file), reason))
            continue
        owner[vid] = file
        parts = vid.split("/")
        for i in range(1, len(parts)):
            under.setdefault("/".join(parts[:i]), file)
        accepted.append(file)
    return accepted, rejected


def _jobs(
    files: list[str], root: Path, out_root: Path, params: FramesParams, workers: int
) -> list[_Job]:
    threads = 0 if workers <= 1 else max(1, (machine.available_cpus()) // workers)
    jobs = []
    for file in files:
        vid = video_id(root / file, root)
        jobs.append(
            _Job(
                root / file,
                file,
                vid,
                out_root / f"{vid}{frames_store.ZIP_SUFFIX}",
                params,
                threads,
            )
        )
    return jobs


@dataclass(frozen=True)
class Planned:
    """One shard's videos as plan_shards listed them (video.shards.read_plan): accepted files
    (relative to the videos root) with their MD5 ('' for a file that is not a readable regular
    file: rejected at decoding, by its reason), and the files rejected by name, with the reason."""

    accepted: dict[str, str]
    rejected: list[tuple[str, str]]


def video_md5s(root: Path, files: Iterable[str]) -> dict[str, str]:
    """{file: MD5} of files relative to `root`, through the node's digest cache (a stat on a file
    hashed before); '' for what is not a readable regular file (a FIFO is never opened: reading it
    blocks), which decoding then rejects with its reason."""
    regular = []
    out = {}
    for file in files:
        try:
            ok = stat.S_ISREG(os.stat(root / file).st_mode)
        except OSError:
            ok = False
        out[file] = ""
        if ok:
            regular.append(file)
    try:
        found = digests.file_md5s(root / f for f in regular)
        out.update({f: found[str(root / f)] for f in regular})
    except OSError:  # one unreadable file: ask one by one
        for f in regular:
            try:
                out[f] = digests.file_md5(root / f)
            except OSError:
                pass
    return out


def check_planned(root: Path, planned: Planned) -> None:
    """A plan that no longer matches the videos (one changed, removed or became readable since
    plan_shards ran) is an error naming them: never a silent extraction of other bytes."""
    now = video_md5s(root, planned.accepted)
    stale = [f for f, md5 in planned.accepted.items() if now[f] != md5]
    if stale:
        shown = ", ".join(printable(f) for f in stale[:5]) + (
            f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        )
        raise ExtractionError(
            f"the shard's video list is stale: {shown} under {root} changed since plan_shards "
            f"listed it (its MD5 differs or it is gone); run plan_shards again (dvc repro)"
        )


def _id_of(file: str) -> str:
    """The video id of a rejected file's name (relative to the videos root), for its shard."""
    return Path(file).with_suffix("").as_posix()


def printable(name: str) -> str:
    """A file name as UTF-8 text: the bytes that are not UTF-8 shown as \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _name_problem(file: str, vid: str, owner: dict[str, str], under: dict[str, str]) -> str | None:
    try:
        file.encode("utf-8")
    except UnicodeEncodeError:  # os.walk hands such bytes over as surrogate escapes
        return "file name is not UTF-8; DVC cannot track it (rename it)"
    parts = vid.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"its frames folder would be {vid!r}, not a folder of its own; rename it"  # '..': out's parent
    if parts[0] in OUTPUT_NAMES:
        return f"frames folder of {file} would collide with the stage's own {parts[0]}; rename it"
    other = owner.get(vid)  # clip.mp4 + clip.avi
    if other is None:  # clip.mp4 + clip/x.mp4: one folder inside the other
        other = next(
            (owner[a] for a in ("/".join(parts[:i]) for i in range(1, len(parts))) if a in owner),
            None,
        )
    other = other or under.get(vid)
    if other is not None:
        return f"frames folder of {file} ({vid + '/'!r}) would collide with {other}'s; rename one"
    return None


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in MANIFEST_DTYPES.items()})


def extract_all(
    videos_root: str | Path,
    out_root: str | Path,
    params: FramesParams,
    progress: bool = True,
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    planned: Planned | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extract every video under `videos_root` (with `shard` (index, count): that shard's videos; with
    `planned`: its videos, none else, after check_planned) with `workers` processes (None: machine.yaml's
    frames.workers); returns (manifest, rejected[file, reason])."""
    root, out_root = Path(videos_root), Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    workers = workers or machine.load().frames_workers
    if planned is None:
        jobs, rejected = _plan(find_videos(root), root, out_root, params, workers, shard)
    else:  # plan_shards named them already, over every video; decode only unchanged files
        check_planned(root, planned)
        jobs, rejected = (
            _jobs(list(planned.accepted), root, out_root, params, workers),
            list(planned.rejected),
        )
    for parent in {out_root, *(job.out_zip.parent for job in jobs)}:
        remove_stale_temporaries(parent)  # leftovers of a killed run
    parts: list[pd.DataFrame] = []
    bar = tqdm(
        total=len(jobs),
        desc="extract_frames",
        unit="video",
        file=sys.stderr,
        disable=None if progress else True,
    )
    with bar:
        for file, frames, reason in _map(jobs, workers):
            bar.update()
            if reason is not None:
                rejected.append((file, reason))
            else:
                parts.append(frames)
    manifest = pd.concat(parts, ignore_index=True) if parts else empty_manifest()
    manifest = manifest[list(MANIFEST_DTYPES)].astype(MANIFEST_DTYPES)
    manifest = manifest.sort_values(["video", "frame"], kind="stable", ignore_index=True)
    rejected_df = pd.DataFrame(sorted(rejected), columns=REJECTED_COLUMNS)
    return manifest, rejected_df


def _map(jobs: list[_Job], workers: int):
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_process, jobs)
        return
    # Each worker spends its time waiting on an ffmpeg child; processes keep pandas and
    # the GIL out of each other's way and match ffmpeg's own one-process-per-video model.
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=worker_context())
    try:
        for future in as_completed([pool.submit(_process, job) for job in jobs]):
            yield future.result()  # an OutputError stops the stage: the videos not started never start
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- the stage


def run_stage(
    *,
    videos_root: str | Path,
    out_root: str | Path,
    metrics_path: str | Path,
    params: FramesParams,
    workers: int | None = None,
    shard: int | None = None,
    planned: Planned | None = None,
) -> dict[str, float | int]:
    """extract_frames (of one shard of `frames.shards`, or of every video): write manifest.parquet,
    rejected.csv and metrics, then fail if the batch as a whole is unusable (the good work stays on
    disk either way); `frames.max_rejected` is judged per shard. `workers`, `planned`: as extract_all."""
    root, out_root = Path(videos_root), Path(out_root)
    workers = workers or machine.load().frames_workers  # a bad machine.yaml stops before any work
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the frames folder {out_root}: {_strerror(exc)}") from None
    if shard is not None and shard not in params.shards:
        raise ExtractionError(f"shard {shard} is not one of frames.shards {params.shards}")
    manifest, rejected = extract_all(
        root,
        out_root,
        params,
        workers=workers,
        shard=None if shard is None else (shard, len(params.shards)),
        planned=planned,
    )
    metrics = _stage_metrics(manifest, rejected)
    _write_outputs(out_root, Path(metrics_path), manifest, rejected, metrics)
    if metrics["videos_found"] == 0 and (
        planned is not None or shard is not None and root.is_dir() and find_videos(root)
    ):
        return metrics  # a shard no video hashes to (few videos, many shards): empty, not an error
    _judge(root, out_root, rejected, metrics["videos_found"], params)
    return metrics


def _stage_metrics(manifest: pd.DataFrame, rejected: pd.DataFrame) -> dict[str, float | int]:
    found = manifest["video"].nunique() + len(rejected)
    share = len(rejected) / found if found else 0.0
    return {
        "videos_found": int(found),
        "videos_extracted": int(manifest["video"].nunique()),
        "videos_rejected": len(rejected),
        "rejected_share": round(share, 6),
        "frames": len(manifest),
        "duplicate_frames": int(manifest["duplicate"].sum()),
    }


def _write_outputs(
    out_root: Path,
    metrics_path: Path,
    manifest: pd.DataFrame,
    rejected: pd.DataFrame,
    metrics: dict[str, float | int],
) -> None:
    """manifest.parquet, rejected.csv and the metrics; a failed write is an OutputError."""
    for target, write, value in (
        (out_root / "manifest.parquet", write_parquet, manifest),
        (out_root / "rejected.csv", write_csv, rejected),
        (metrics_path, write_json, metrics),
    ):
        try:
            write(target, value)
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {_strerror(exc)}") from None


def _judge(
    root: Path, out_root: Path, rejected: pd.DataFrame, found: int, params: FramesParams
) -> None:
    """ExtractionError when the batch as a whole is unusable: no video found, or a share of them
    rejected above frames.max_rejected (the rejected listed)."""
    if found == 0:
        if not root.is_dir():
            raise ExtractionError(f"videos folder not found: {root}")
        exts = " ".join(sorted(VIDEO_EXTENSIONS))
        raise ExtractionError(f"no video found under {root} (extensions: {exts})")
    share = len(rejected) / found
    if share > params.max_rejected:
        raise ExtractionError(
            f"{len(rejected)} of {found} videos rejected (share {share:.3f} > "
            f"frames.max_rejected {params.max_rejected}); see {out_root / 'rejected.csv'}:\n"
            + _list_rejected(rejected)
        )


def _list_rejected(rejected: pd.DataFrame, limit: int = 20) -> str:
    lines = [f"  {r.file}: {r.reason}" for r in rejected.head(limit).itertuples()]
    if len(rejected) > limit:
        lines.append(f"  ... and {len(rejected) - limit} more")
    return "\n".join(lines)
