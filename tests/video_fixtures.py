"""Tiny real videos made with ffmpeg's lavfi sources, and helpers to run the stages on them, shared
by the video tests.

Imported by the test modules (not a conftest) so it never collides with other fixtures.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from demystify.core.config import FramesParams, PairsParams
from demystify.core.ffmpeg_bin import ffmpeg_exe
from demystify.core.frames_store import FrameStore, read_bytes
from demystify.pairs.mine import run_stage as mine_stage


def ffmpeg(*args: str) -> None:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True
    )


def make_clip(
    path: Path, seconds: float = 2, rate: int = 25, size: str = "64x48", *extra: str
) -> Path:
    """An H.264 testsrc2 clip (moov atom at the end, as ffmpeg writes by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}:duration={seconds}",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        *extra,
        str(path),
    )
    return path


def stored_frames(out: Path) -> dict[str, bytes]:
    """Every frame in the zips under a frames folder (any shard's), by its address <video>/NNNNNN.jpg."""
    return {frame: read_bytes(address) for frame, address in FrameStore(out).frame_addresses()}


def make_audio_only(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path))
    return path


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Good and bad source files, made once; tests copy what they need into their own folder."""
    d = tmp_path_factory.mktemp("clips")
    good = make_clip(d / "good.mp4")
    faststart = make_clip(
        d / "faststart.mp4", 4, 25, "64x48", "-g", "25", "-movflags", "+faststart"
    )
    return {
        "good": good,
        "portrait": make_clip(d / "portrait.mkv", 2, 25, "48x64"),
        "rotated": _rotated(good, d / "rotated.mp4"),
        "audio": make_audio_only(d / "audio.mp4"),
        "truncated": truncate(good, d / "truncated.mp4"),
        # moov first: the header is fine, the data stops part way: a decode error when the
        # cut splits a packet, a silently short video when it falls between two.
        "truncated_data": truncate(faststart, d / "truncated_data.mp4", 0.5),
        "truncated_clean": truncate(faststart, d / "truncated_clean.mp4", 0.6),
    }


def _rotated(src: Path, dst: Path) -> Path:
    ffmpeg("-display_rotation", "90", "-i", str(src), "-c", "copy", str(dst))
    return dst


def frames_params(**kw) -> FramesParams:
    """Small, fast extraction params for tests; keywords override."""
    base = dict(fps=5.0, size=32, jpeg_quality=5, max_rejected=1.0, decode_timeout_s=60.0)
    return FramesParams(**{**base, **kw})


def put(src: Path, dst: Path) -> Path:
    """Copy a clip to `dst`, creating its folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def mine_pairs(
    manifest: Path,
    frames: Path,
    videos: Path | None,
    p: PairsParams,
    out: Path,
    workers: int | None = None,
) -> dict:
    """The mine_pairs stage over a frames folder, all its outputs in `out` (pairs.parquet,
    pairs.png, metrics.json); its metrics."""
    return mine_stage(
        manifest_path=manifest,
        frames_root=frames,
        videos_root=videos,
        out_pairs=out / "pairs.parquet",
        out_dir=out,
        p=p,
        workers=workers,
    )
