"""Feature-extraction speed of the evaluation stages: images/s of `evaluation.features.extract`
(decode, resize, normalise, pooled ResNet features) on CPU or GPU, for one evaluation set.

    python bench/features.py --set data/world/eval/aloi/aloi_red2_view/png2 --size 64
    python bench/features.py --device cuda --arch resnet50 --size 128 --workers 8
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from demystify.evaluation.features import Loading, extract, load_model

SUFFIXES = (".png", ".jpg", ".jpeg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="data/world/eval/aloi/aloi_red2_view/png2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--limit", type=int, default=2000)
    args = ap.parse_args()
    paths = sorted(str(p) for p in Path(args.set).rglob("*") if p.suffix.lower() in SUFFIXES)[
        : args.limit
    ]
    if not paths:
        raise SystemExit(f"{args.set}: no images")
    model = load_model(None, args.arch, args.device)
    warm = Loading(args.device, args.batch)
    extract(model, paths[: args.batch], None, args.size, warm)  # warm-up
    start = time.perf_counter()
    loading = Loading(args.device, args.batch, args.workers)
    feat = extract(model, paths, None, args.size, loading)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    print(
        f"device {args.device} ({name}), {os.cpu_count()} cores, torch {torch.__version__}; {args.arch}, "
        f"{args.size} px, batch {args.batch}, {args.workers} workers"
    )
    print(
        f"  {len(paths)} images -> {feat.shape} features in {seconds:.1f} s = {len(paths) / seconds:.0f} images/s"
    )


if __name__ == "__main__":
    main()
