"""Renderer throughput: frames/s at 64x64 (target: >= 300 on a 2-core machine).

Prints figures for the two kinds of image the world is made of: one object (object-centric
corpus, ALOI, instance sets) and a video-like frame of four objects (target, two distractors,
an occluder). Usage: python bench/bench_render.py [--size 64] [--batch 16] [--frames 1024]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from demystify.world import scenes as sc
from demystify.world.render import Renderer, keep_freed_memory
from demystify.world.shapes import make_catalog


def items(kind: str, n: int, n_inst: int, occluder: int) -> list[sc.Item]:
    out = []
    for i in range(n):
        r = sc.rng_for(0, sc.SCENE, i)
        if kind == "one object":
            out.append(sc.object_centric(r, int(r.integers(n_inst))))
        else:
            it = sc.scene(r, [int(x) for x in r.choice(n_inst, 3, replace=False)] + [occluder])
            out.append(it)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=1024)
    args = ap.parse_args()
    keep_freed_memory()
    catalog = make_catalog(10, 20, 8, 0)
    renderer = Renderer(catalog, args.size, args.size)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for kind in ("one object", "four objects"):
        scenes = items(kind, args.frames, 200, 200)
        batches = [sc.stack(scenes[i : i + args.batch]) for i in range(0, len(scenes), args.batch)]
        renderer(batches[0])  # warm-up
        start = time.perf_counter()
        for b in batches:
            renderer(b)
        elapsed = time.perf_counter() - start
        print(
            f"{kind:>13}: {args.frames / elapsed:7.1f} frames/s at {args.size}x{args.size} "
            f"(batch {args.batch}, {args.frames} frames, {elapsed:.2f} s)"
        )


if __name__ == "__main__":
    main()
