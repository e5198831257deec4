"""Peak resident memory of the segmentation evaluation (`segment` of evaluate@MODEL) at two data
sizes; target: flat (the larger within 10 % of the smaller). Needs nothing built first: it writes a
synthetic segmentation set in the world's format (classes.txt, <split>/images, <split>/masks) and a
randomly initialised backbone into a temporary folder, then runs the evaluation once per size, each
in a fresh process (`ru_maxrss`: the high-water mark of that process alone).

    python bench/segmentation_memory.py                    # ResNet-50, 128 px, 100 and 400 train images
    PYTHONPATH=OTHER/src python bench/segmentation_memory.py   # the same against another checkout's code
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ["background", "disc", "box", "bar"]


def write_set(root: Path, train: int, test: int, size: int, seed: int = 0) -> None:
    """Flat noisy backgrounds with a few discs, boxes and bars, each its own class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    yy, xx = np.mgrid[:size, :size]
    for split, n in (("train", train), ("test", test)):
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 256, 3) + rng.normal(0, 12, (size, size, 3))
            mask = np.zeros((size, size), np.uint8)
            for _ in range(rng.integers(1, 4)):
                cls = int(rng.integers(1, len(CLASSES)))
                cy, cx, r = rng.integers(0, size, 2).tolist() + [
                    int(rng.integers(size // 10, size // 4))
                ]
                if cls == 1:
                    region = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                elif cls == 2:
                    region = (abs(yy - cy) < r) & (abs(xx - cx) < r)
                else:
                    region = (abs(yy - cy) < r // 4) & (abs(xx - cx) < 2 * r)
                mask[region] = cls
                img[region] = rng.integers(0, 256, 3) + rng.normal(0, 12, (int(region.sum()), 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                root / split / "images" / f"{i:05d}.png"
            )
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{i:05d}.png")


def child(args) -> None:
    """One evaluation in this process; prints its peak resident memory as JSON."""
    from demystify.core.config import SegmentationParams
    from demystify.evaluation import segmentation
    from demystify.evaluation.features import Model

    p = SegmentationParams.model_validate(
        dict(
            format="world",
            data=args.data,
            train_split="train",
            test_split="test",
            size=args.size,
            layers=args.layers,
            head="linear",
            epochs=args.epochs,
            lr=0.01,
            weight_decay=1e-4,
            batch_size=args.batch_size,
            examples=0,
            seed=0,
        )
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    metrics = segmentation.run_stage(
        Model("bench", args.arch, args.backbone),
        p,
        args.out,
        device="cpu",
        progress=False,
        workers=0,
    )
    print(
        json.dumps(
            {
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "before_mib": before,
                "seconds": time.perf_counter() - t,
                "miou": metrics["miou"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--images", type=int, default=100, help="train images of the smaller size (test: half)"
    )
    ap.add_argument(
        "--factor", type=int, default=4, help="the larger size is this many times the smaller"
    )
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--layers", nargs="+", default=["layer2", "layer3", "layer4"])
    ap.add_argument(
        "--epochs", type=int, default=1, help="head epochs (the peak is reached in the first)"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--backbone", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import torch

    from demystify.backbone import backbone, plain_backbone_state

    with tempfile.TemporaryDirectory(prefix="bench-segmentation-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        torch.save(plain_backbone_state(backbone(args.arch)), tmp / "backbone.pt")
        print(
            f"machine: {os.uname().machine}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; {args.arch} at {args.size} px, {'+'.join(args.layers)}, "
            f"batch {args.batch_size}, {args.epochs} head epoch(s)",
            flush=True,
        )
        rows = []
        for scale in (1, args.factor):
            train, test = args.images * scale, args.images * scale // 2
            data = tmp / f"set{scale}"
            write_set(data, train, test, args.size)
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--data",
                str(data),
                "--backbone",
                str(tmp / "backbone.pt"),
                "--out",
                str(tmp / f"out{scale}"),
                "--arch",
                args.arch,
                "--size",
                str(args.size),
                "--epochs",
                str(args.epochs),
                "--batch-size",
                str(args.batch_size),
                "--layers",
                *args.layers,
            ]
            r = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[
                    -1
                ]
            )
            rows.append(r)
            print(
                f"{train:6d} train + {test:5d} test images: peak RSS {r['peak_mib']:7.0f} MiB "
                f"(after imports {r['before_mib']:5.0f} MiB), {r['seconds']:6.1f} s, mIoU {r['miou']:.3f}",
                flush=True,
            )
        ratio = rows[1]["peak_mib"] / rows[0]["peak_mib"]
        print(
            f"ratio {ratio:.3f} at {args.factor}x the images: target <= 1.10, "
            f"{'met' if ratio <= 1.10 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
