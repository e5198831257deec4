"""Benchmark frame extraction against the plain ffmpeg command line.

Makes N testsrc2 H.264 clips, then times
  (a) plain ffmpeg decoding each clip with the same filters (fps + scale) to a null sink,
      over the same number of parallel processes as ours (and with 1 process, for context);
  (b) `extract_all` with the same parameters (which also encodes and writes the JPEGs);
  (c) plain ffmpeg writing the same JPEGs, the floor for any extractor, so the share of (a)
      -> (b) that is JPEG encoding + writing, not our overhead, is visible.
Prints frames/s and videos/s for each and the ratio ours / plain (target >= 0.8).

    .venv/bin/python bench/bench_extract.py [--videos 16 --seconds 10 --fps 10 --size 224]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from demystify.core.config import FramesParams
from demystify.core.ffmpeg_bin import ffmpeg_exe
from demystify.video.extract import extract_all, find_videos, output_size
from demystify.video.probe import probe


def make_videos(folder: Path, count: int, seconds: float, rate: int, size: str) -> list[Path]:
    def one(i: int) -> Path:
        path = folder / f"clip_{i:03d}.mp4"
        src = f"testsrc2=size={size}:rate={rate}:duration={seconds}"
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", src, "-c:v", "libx264"]
        subprocess.run([*cmd, "-pix_fmt", "yuv420p", str(path)], check=True)
        return path

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(one, range(count)))


def plain_ffmpeg(
    videos: list[Path], params: FramesParams, workers: int, jpeg_dir: Path | None = None
) -> float:
    """Seconds for plain ffmpeg to decode + filter every video to a null sink (or, with
    `jpeg_dir`, to the same JPEG files we write: the floor for any extractor)."""
    info = probe(videos[0])  # all clips are alike
    w, h = output_size(info.width, info.height, params.size)

    def one(path: Path) -> None:
        vf = f"fps={params.fps},scale={w}:{h}"
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-vf", vf]
        if jpeg_dir is None:
            out = ["-f", "null", "-"]
        else:
            (jpeg_dir / path.stem).mkdir(parents=True)
            pattern = str(jpeg_dir / path.stem / "%06d.jpg")
            out = ["-q:v", str(params.jpeg_quality), "-start_number", "0", pattern]
        subprocess.run([*cmd, *out], check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, videos))
    return time.perf_counter() - start


def ours(root: Path, out: Path, params: FramesParams, workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    manifest, rejected = extract_all(root, out, params, progress=False, workers=workers)
    elapsed = time.perf_counter() - start
    if not rejected.empty:
        sys.exit(f"unexpected rejections:\n{rejected}")
    return elapsed, len(manifest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rate", type=int, default=25, help="source frame rate")
    ap.add_argument("--source-size", default="320x240")
    ap.add_argument("--fps", type=float, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    ap.add_argument("--repeat", type=int, default=5, help="best of N interleaved rounds")
    args = ap.parse_args()
    workers = args.workers or os.cpu_count() or 1
    params = FramesParams(
        fps=args.fps,
        size=args.size,
        jpeg_quality=args.quality,
        max_rejected=0.0,
        decode_timeout_s=600.0,
    )
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        root = Path(tmp) / "videos"
        root.mkdir()
        make_videos(root, args.videos, args.seconds, args.rate, args.source_size)
        videos = find_videos(root)
        n = len(videos)
        # Interleaved rounds: a shared VM's speed drifts, so each contender sees the same drift.
        seqs, pars, jpgs, runs = [], [], [], []
        for i in range(args.repeat):
            seqs.append(plain_ffmpeg(videos, params, 1))
            pars.append(plain_ffmpeg(videos, params, workers))
            jpgs.append(plain_ffmpeg(videos, params, workers, Path(tmp) / f"jpeg{i}"))
            runs.append(ours(root, Path(tmp) / f"out{i}", params, workers))
        seq, par, jpg = min(seqs), min(pars), min(jpgs)
        mine, frames = min(runs)

    print(
        f"{n} videos x {args.seconds:g} s {args.source_size} @ {args.rate} fps -> "
        f"fps={args.fps:g} size={args.size} q={args.quality}; {frames} frames; "
        f"{workers} processes; {os.cpu_count()} cores; best of {args.repeat}"
    )
    for name, sec in [
        ("plain ffmpeg, 1 process", seq),
        (f"plain ffmpeg, {workers} processes", par),
        (f"plain ffmpeg -> JPEG, {workers} processes", jpg),
        (f"extract_all, {workers} processes", mine),
    ]:
        print(f"  {name:34s} {sec:7.2f} s  {frames / sec:8.1f} frames/s  {n / sec:6.2f} videos/s")
    print(
        f"  ratio ours / plain null sink ({workers} processes): {par / mine:.2f}  (target >= 0.8)"
    )
    print(f"  ratio ours / plain ffmpeg writing the same JPEGs: {jpg / mine:.2f}")
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
