"""The data stages at scale, simulated on this machine (issue 24; figures in BENCHMARKS.md):

1. shards: a world of `--videos` tiny videos (one real ffmpeg clip, copied) in `--shards` shards, run by
   real DVC in a copy of the repository; shards 0..k-1 done, shard k killed (SIGKILL of the whole
   `dvc repro` process group) part-way; then `dvc repro` of the group: which stages rerun, how long.
2. check_data's per-video work (centricity.video_tracks + video_frames + pair_crops; CPU time) on synthetic
   manifests of 1k, 2k, 4k videos: seconds per video, grouped pass vs the per-video masks it replaced.
3. a no-op `dvc status` with frames as loose files vs the same frames as one zip per video in shards
   (synthetic file trees; one stage writes them, one stage depends on the folder, as mine_pairs does).

    python bench/scale_frames.py                               # the issue's sizes (about 10 min here)
    python bench/scale_frames.py --videos 400 --shards 8 --kill-at 4 --status-videos 400   # quicker
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import copy_repo  # noqa: E402

from demystify.checks import centricity
from demystify.core.ffmpeg_bin import ffmpeg_exe
from demystify.pairs import ground_truth
from demystify.tools.params_file import compose

RAN = re.compile(r"^Running stage '([^']+)'", re.M)


def _env(root: Path) -> dict:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root / "src"),
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }


def _dvc(args: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took, proc.stdout + proc.stderr


# ---------------------------------------------------------------- 1. shards


def shards(work: Path, videos: int, count: int, kill_at: int) -> dict:
    repo = work / "repo"
    repo.mkdir()
    copy_repo(repo)
    env = _env(repo)
    shard_list = "[" + ",".join(map(str, range(count))) + "]"
    compose(
        repo / "params.yaml",
        [
            "scale=smoke",
            "data=folder",
            "data.videos=videos",
            f"frames.shards={shard_list}",
            "frames.workers=2",
        ],
        config_dir=repo / "conf",
    )
    clip = repo / "videos" / "v00000.mp4"
    clip.parent.mkdir()
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x48:rate=10:duration=1",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
    )
    for i in range(1, videos):
        shutil.copy(clip, clip.with_name(f"v{i:05d}.mp4"))
    first = [f"extract_frames@{k}" for k in range(kill_at)]
    t_first, _ = _dvc(
        ["repro", "--single-item", "plan_shards", *first], repo, env
    )  # the lists, then shards
    # shard `kill_at` killed part-way: once a third of its videos are written
    proc = subprocess.Popen(
        ["dvc", "repro", "--single-item", f"extract_frames@{kill_at}"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    target = repo / "data" / "frames" / f"shard-{kill_at}"
    while proc.poll() is None and len(list(target.glob("*.zip"))) < videos / count / 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(target.glob("*.zip")))
    t_rest, out = _dvc(["repro", "--single-item", "extract_frames"], repo, env)
    ran = RAN.findall(out)
    t_status, _ = _dvc(["status"], repo, env)
    return {
        "videos": videos,
        "shards": count,
        "kill_at": kill_at,
        "zips_before_kill": written,
        "first_s": round(t_first, 1),
        "rerun_s": round(t_rest, 1),
        "rerun": ran,
        "rerun_only_killed_and_later": sorted(ran)
        == sorted(f"extract_frames@{k}" for k in range(kill_at, count)),
        "status_after_s": round(t_status, 1),
    }


# ---------------------------------------------------------------- 2. check_data per video


def synthetic_tables(
    videos: int, frames: int = 30, pairs: int = 32, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A frames manifest (ground truth carried: x, y, w, h) and a pairs table of `videos` videos."""
    r = np.random.default_rng(seed)
    names = np.repeat([f"v{i:05d}" for i in range(videos)], frames)
    n = len(names)
    manifest = pd.DataFrame(
        {
            "video": names,
            "frame": np.tile(np.arange(frames), videos),
            "time_s": 0.0,
            "width": 160,
            "height": 120,
            "x": r.uniform(0, 80, n),
            "y": r.uniform(0, 60, n),
            "w": r.uniform(10, 60, n),
            "h": r.uniform(10, 50, n),
            "absence": 0,
        }
    )
    manifest["time_s"] = manifest["frame"] / 5.0
    m = videos * pairs
    pv = np.repeat([f"v{i:05d}" for i in range(videos)], pairs)
    fa = r.integers(0, frames - 5, m)
    table = pd.DataFrame(
        {
            "video": pv,
            "frame_a": fa,
            "frame_b": fa + 3,
            "source": "tracker",
            "track": 0,
            "a_x": r.uniform(0, 80, m),
            "a_y": r.uniform(0, 60, m),
            "a_w": r.uniform(10, 60, m),
            "a_h": r.uniform(10, 50, m),
        }
    )
    return manifest, table


def _per_video_masks(pairs: pd.DataFrame, manifest: pd.DataFrame) -> int:
    """The replaced pair_crops loop (a mask over the manifest per video, one over its tracks per pair),
    measures left out: only the lookups it did."""
    count = 0
    for video, mine in pairs.groupby("video", sort=True):
        tracks = ground_truth.load_tracks(manifest[manifest.video == video], None)
        for r in mine.itertuples():
            count += len(ground_truth.boxes_at(tracks, r.frame_a)[1])
    return count


def check_data(sizes: list[int], old_upto: int) -> list[dict]:
    rows = []
    for videos in sizes:
        manifest, pairs = synthetic_tables(videos)
        start = time.process_time()
        tracks = centricity.video_tracks(manifest, None)
        centricity.video_frames(manifest, None, pairs, tracks)
        centricity.pair_crops(pairs, manifest, None, tracks)
        grouped = time.process_time() - start
        row = {"videos": videos, "grouped_ms_per_video": round(grouped / videos * 1e3, 3)}
        if videos <= old_upto:
            start = time.process_time()
            _per_video_masks(pairs, manifest)
            row["masks_ms_per_video"] = round((time.process_time() - start) / videos * 1e3, 3)
        rows.append(row)
        print(row, flush=True)
    return rows


# ---------------------------------------------------------------- 3. dvc status


WRITE = """import sys, zipfile
from pathlib import Path
layout, videos, frames, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
shard = int(sys.argv[5]) if len(sys.argv) > 5 else None
jpeg = bytes(range(256)) * 8  # 2 KiB a frame
for v in range(videos):
    if shard is not None and v % count != shard:
        continue
    if layout == "loose":
        d = Path("data/frames") / f"v{v:05d}"
        d.mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            (d / f"{f:06d}.jpg").write_bytes(jpeg + v.to_bytes(4, "big") + f.to_bytes(4, "big"))
    else:
        d = Path(f"data/frames/shard-{shard}")
        d.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(d / f"v{v:05d}.zip", "w", zipfile.ZIP_STORED) as zf:
            for f in range(frames):
                zf.writestr(f"{f:06d}.jpg", jpeg + v.to_bytes(4, "big") + f.to_bytes(4, "big"))
"""


def status(work: Path, videos: int, frames: int, count: int) -> dict:
    out = {"videos": videos, "frames_per_video": frames, "shards": count}
    for layout in ("loose", "sharded"):
        repo = work / f"status-{layout}"
        repo.mkdir()
        (repo / "write.py").write_text(WRITE)
        if layout == "loose":
            writer = (
                f"  write:\n    cmd: python write.py loose {videos} {frames} 1\n    deps: [write.py]\n"
                "    outs: [data/frames]\n"
            )
        else:
            items = ", ".join(map(str, range(count)))
            writer = (
                f"  write:\n    foreach: [{items}]\n    do:\n      cmd: python write.py zip {videos} {frames} {count} ${{item}}\n"
                "      deps: [write.py]\n      outs:\n        - data/frames/shard-${item}\n"
            )
        (repo / "dvc.yaml").write_text(
            "stages:\n" + writer + "  read:\n    cmd: ls data/frames > listed.txt\n"
            "    deps: [data/frames]\n    outs: [listed.txt]\n"
        )
        env = _env(repo)
        for cmd in (
            ["git", "init", "-q"],
            ["dvc", "init", "-q"],
            ["dvc", "config", "--local", "core.site_cache_dir", str(repo / ".dvc" / "site_cache")],
        ):
            subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
        t_repro, _ = _dvc(["repro"], repo, env)
        cold, _ = _dvc(["status"], repo, env)
        warm, _ = _dvc(["status"], repo, env)
        files = sum(1 for p in (repo / "data" / "frames").rglob("*") if p.is_file())
        out[layout] = {
            "files": files,
            "repro_s": round(t_repro, 1),
            "status_s": round(cold, 2),
            "status_again_s": round(warm, 2),
        }
        print(layout, out[layout], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--kill-at", type=int, default=10)
    ap.add_argument("--check-sizes", default="1000,2000,4000")
    ap.add_argument(
        "--masks-upto",
        type=int,
        default=2000,
        help="time the replaced per-video masks up to this size",
    )
    ap.add_argument("--status-videos", type=int, default=2000)
    ap.add_argument("--status-frames", type=int, default=50)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: shards,check,status")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory(prefix="scale_frames_") as tmp:
        work = Path(tmp)
        if "check" not in skip:
            print(
                "check_data per video:",
                check_data([int(s) for s in args.check_sizes.split(",")], args.masks_upto),
            )
        if "status" not in skip:
            print(
                "no-op dvc status:",
                status(work, args.status_videos, args.status_frames, args.shards),
                flush=True,
            )
        if "shards" not in skip:
            print("shards:", shards(work, args.videos, args.shards, args.kill_at), flush=True)


if __name__ == "__main__":
    main()
