"""Sharing the cores: K training processes at once against the same K one after another.

Each process runs the same MoCo workload (the default model at the default size, batch 64,
--steps optimizer steps on seeded tensors) with torch's default thread count (one per core).
Printed: the sequential total (K x one alone) and the concurrent wall time of the K started at
once, (a) as they are (every process all the cores' threads), (b) with OpenMP's passive wait
policy (idle threads sleep instead of spinning), (c) each waiting for its cores as the stages do
(demystify.cores), and each process's parameter MD5 (the same bytes in every mode).

    python bench/threads.py --processes 4        # nothing to run first (about 15 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = r"""
import hashlib, os, sys
import torch
sys.path.insert(0, sys.argv[3])
from demystify import cores
from demystify.ssl.moco import MoCo, encoder
if sys.argv[4] == "wait":
    cores.claim("worker", os.cpu_count())
torch.manual_seed(0)
m = MoCo(encoder("resnet18", 128, 2, width=float(sys.argv[2])), 256, 0.99, 0.1, 2).train()
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
g = torch.Generator().manual_seed(1)
x, y = torch.randn(64, 3, 64, 64, generator=g), torch.randn(64, 3, 64, 64, generator=g)
for _ in range(int(sys.argv[1])):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, labels = m(x, y)[:2]
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    opt.zero_grad(); loss.backward(); opt.step()
print(hashlib.md5(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest())
"""


def run(k: int, steps: int, width: float, mode: str, slots: str) -> tuple[float, set[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if mode == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["DEMYSTIFY_CORES_DIR"] = slots
    src = str(Path(__file__).resolve().parents[1] / "src")
    argv = [sys.executable, "-c", WORKER, str(steps), str(width), src, mode]
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    digests = {p.communicate()[0].strip() for p in procs}
    if any(p.returncode for p in procs):
        raise SystemExit("a worker failed")
    return time.perf_counter() - started, digests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["spin", "passive", "wait"],
        choices=["spin", "passive", "wait"],
    )
    args = ap.parse_args()
    print(
        f"{os.cpu_count()} CPUs; {args.processes} processes x {args.steps} MoCo steps (resnet18 x{args.width}, "
        f"64 px, batch 64, bf16 autocast), torch's default threads each",
        flush=True,
    )
    names = {
        "spin": "as they are",
        "passive": "OMP_WAIT_POLICY=PASSIVE",
        "wait": "waiting for cores",
    }
    with tempfile.TemporaryDirectory() as slots:
        for mode in args.modes:
            alone, d1 = run(1, args.steps, args.width, mode, slots)
            together, dk = run(args.processes, args.steps, args.width, mode, slots)
            print(
                f"  {names[mode]:24s} one alone {alone:6.1f} s, sequential {args.processes * alone:6.1f} s, "
                f"{args.processes} at once {together:6.1f} s = {together / (args.processes * alone):.2f}x sequential; "
                f"MD5 {sorted(d1 | dk)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
