"""The whole pipeline's time and memory per stage: `dvc repro` in a fresh copy of the repository
(params composed from conf/ with optional overrides), with every stage's wall time and peak
resident memory (the largest single process of the stage, and the sum over its process tree,
loader workers included) sampled from /proc every 0.2 s.

    python bench/pipeline.py                                   # the default (cpu) scale, ~32 min
    python bench/pipeline.py --override world.videos.count=80 --targets check_data
    python bench/pipeline.py --override scale=smoke
    python bench/pipeline.py --in-place     # `dvc repro` of this repository itself (what `make run` does)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from demystify.tools.params_file import compose
from demystify.tools.repo_copy import copy_project, dvc_env

ROOT = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"^Running stage '([^']+)'")


def copy_repo(dest: Path) -> None:
    copy_project(ROOT, dest)
    env = dvc_env(
        dest,
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
    )
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "bench"],
        ["dvc", "config", "--local", "core.site_cache_dir", str(dest / ".dvc" / "site_cache")],
    ):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)


class Sampler(threading.Thread):
    """Peak RSS of the process tree under `root_pid`, per current stage."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.stage: str | None = None
        self.peaks: dict[str, tuple[int, int]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [
                    p
                    for p in self.root.children(recursive=True)
                    if "dvc" not in " ".join(p.cmdline()[:2])
                ]
                rss = [p.memory_info().rss for p in procs]
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                rss = []
            if self.stage and rss:
                single, total = self.peaks.get(self.stage, (0, 0))
                self.peaks[self.stage] = (max(single, max(rss)), max(total, sum(rss)))
            time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--override", action="append", default=[], help="a Hydra override, e.g. scale=smoke"
    )
    ap.add_argument("--targets", nargs="*", default=[])
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository")
    ap.add_argument(
        "--in-place", action="store_true", help="run in this repository, with its params.yaml"
    )
    args = ap.parse_args()
    if args.in_place:
        work = ROOT
    else:
        work = Path(tempfile.mkdtemp(prefix="demystify-bench-"))
        copy_repo(work)
        compose(work / "params.yaml", args.override, config_dir=work / "conf")
    env = dvc_env(work)
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["dvc", "repro", *args.targets],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    sampler = Sampler(proc.pid)
    sampler.start()
    starts: list[tuple[str, float]] = []
    for line in proc.stdout:
        m = STAGE.match(line)
        if m:
            starts.append((m[1], time.perf_counter()))
            sampler.stage = m[1]
    proc.wait()
    end = time.perf_counter()
    sampler.stop.set()
    total = end - start
    print(
        f"dvc repro {' '.join(args.targets)} ({' '.join(args.override) or 'default scale'}): "
        f"{total / 60:.1f} min wall, exit {proc.returncode}, {os.cpu_count()} cores"
    )
    print(f"{'stage':40s} {'seconds':>8s} {'share':>6s} {'peak MiB':>9s} {'tree MiB':>9s}")
    groups: dict[str, float] = {}
    for i, (stage, t0) in enumerate(starts):
        t1 = starts[i + 1][1] if i + 1 < len(starts) else end
        single, tree = sampler.peaks.get(stage, (0, 0))
        print(
            f"{stage:40s} {t1 - t0:8.1f} {(t1 - t0) / total:6.1%} {single / 2**20:9.0f} {tree / 2**20:9.0f}"
        )
        group = (
            stage.split("@")[0]
            if stage.startswith(("pretrain@", "evaluate_", "summarize", "report"))
            else "data"
        )
        group = group.split("_")[0] if group.startswith(("summarize_", "evaluate_")) else group
        groups[group] = groups.get(group, 0.0) + t1 - t0
    print("shares: " + ", ".join(f"{g} {t:.0f} s ({t / total:.1%})" for g, t in groups.items()))
    if args.keep and not args.in_place:
        print(f"repository kept at {work}")
    elif not args.in_place:
        shutil.rmtree(work, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
