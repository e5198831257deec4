"""A sweep's cost with DVC's run-cache: `dvc exp run` over two values of a pretraining param, then
the first value again, in a fresh copy of the repository. The last run should restore every stage
(training included) from the run-cache instead of running it.

    python bench/run_cache.py                        # smoke scale, pretrain.lr 0.03 -> 0.1 -> 0.03
    python bench/run_cache.py --override scale=cpu   # the default scale (about 45 min)

Target: the repeated setting takes under 10 % of the first run of it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import copy_repo  # noqa: E402

from demystify.tools.params_file import compose

RAN = re.compile(r"^Running stage '([^']+)'", re.M)
CACHED = re.compile(r"Stage '([^']+)' is cached - skipping run")


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took, proc.stdout + proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--override", action="append", default=None, help="Hydra overrides (default: scale=smoke)"
    )
    ap.add_argument("--param", default="pretrain.lr")
    ap.add_argument("--values", nargs=2, default=["0.03", "0.1"])
    args = ap.parse_args()
    overrides = args.override or ["scale=smoke"]
    work = Path(tempfile.mkdtemp(prefix="demystify-runcache-"))
    copy_repo(work)
    compose(work / "params.yaml", overrides, config_dir=work / "conf")
    env = {
        **os.environ,
        "PYTHONPATH": str(work / "src"),
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    for key, value in (("user.name", "bench"), ("user.email", "bench@example.com")):
        subprocess.run(["git", "config", key, value], cwd=work, check=True)

    took, _ = timed(["dvc", "repro"], work, env)
    print(f"{' '.join(overrides)}; {os.cpu_count()} cores; baseline `dvc repro`: {took:.1f} s")
    sets = [*(["-S", o] for o in overrides)]
    flags = [flag for pair in sets for flag in pair]
    rows = []
    for value in (args.values[0], args.values[1], args.values[0]):
        took, log = timed(["dvc", "exp", "run", *flags, "-S", f"{args.param}={value}"], work, env)
        ran, cached = RAN.findall(log), CACHED.findall(log)
        rows.append(took)
        trained = sum(s.startswith("pretrain@") for s in ran)
        print(
            f"dvc exp run -S {args.param}={value:<6s} {took:7.1f} s   stages run {len(ran):3d} "
            f"(training {trained}), restored from the run-cache {len(cached):3d}"
        )
    print(f"repeated setting / its first run: {rows[2] / rows[0]:.3f} (target < 0.10)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
