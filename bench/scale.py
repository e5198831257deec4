"""The paper scale, simulated on this machine (issue 24): one command for its figures in BENCHMARKS.md.

- bench/scale_resume.py: a second pretraining start's hashing on 200,000 files against a stat pass
  (the node's digest cache, src/demystify/digests.py);
- bench/scale_frames.py: a 2,000-video world in 20 shards killed at shard 10 (what reruns),
  check_data's time per video at 1k, 2k and 4k videos, a no-op `dvc status` on sharded frames
  against the same frames as loose files.

Run on a fresh clone after `make install`:

    python bench/scale.py            # both, the issue's sizes (about 12 minutes on 2 cores)
    python bench/scale.py --quick    # smaller sizes, the same measurements (about 3 minutes)

Each part prints its own figures; this script only runs them in turn and stops at the first failure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = {
    "scale_resume.py": ["--files", "20000"],
    "scale_frames.py": [
        "--videos",
        "400",
        "--shards",
        "8",
        "--kill-at",
        "4",
        "--status-videos",
        "400",
        "--check-sizes",
        "250,500,1000",
    ],
}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes (see QUICK)")
    args = ap.parse_args()
    for script in ("scale_resume.py", "scale_frames.py"):
        print(f"== bench/{script}", flush=True)
        argv = [sys.executable, str(HERE / script), *(QUICK[script] if args.quick else [])]
        if subprocess.run(argv).returncode != 0:
            print(f"bench/{script} failed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
