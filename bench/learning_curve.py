"""How far a trained variant gets past the untrained network, against training time: for each step
budget, train the variant from scratch (warm-up and cosine sized to that budget), then fit the
classification probes on its frozen features and on the untrained network's, and print the
learning gate's measure (linear and kNN top-1 minus the untrained network's, with 95 % paired
bootstrap intervals) beside the minutes of training.

    python bench/learning_curve.py --steps 150 300 600        # after `make run` (needs data/world)
    python bench/learning_curve.py --variant moco_scene_crops --steps 300 --set image_size=48

`--set KEY=VALUE` overrides `pretrain` params of params.yaml for every budget.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from demystify import config
from demystify.evaluation.downstream_stage import classify
from demystify.report.evidence import Evidence
from demystify.ssl import train as trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variant", default="moco_object_centric")
    ap.add_argument("--steps", type=int, nargs="+", default=[150, 300, 600])
    ap.add_argument("--set", action="append", default=[], help="a pretrain param for every budget, KEY=VALUE")
    args = ap.parse_args()
    params = config.load("pretrain", "variants", "classification", path=args.params)
    base, variant, cp = params["pretrain"], params["variants"][args.variant], params["classification"]
    fixed = {k: config.parse_yaml(v) for k, v in (s.split("=", 1) for s in args.set)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = tmp / "results"  # laid out as results/classification/MODEL, as the report reads it
        torch.manual_seed(base.seed)  # the untrained network of pretrain@random: the seeded init
        classify("random", base.arch, None, cp, results / "classification" / "random", device, progress=False)
        print(f"{args.variant} on {device}, {fixed or 'params.yaml settings'}; margin = top-1 minus the untrained "
              "network's [95 % paired bootstrap]", flush=True)
        for steps in args.steps:
            p = base.model_validate({**base.model_dump(), **fixed, "steps": steps, "log_every": steps,
                                     "warmup_steps": min(base.warmup_steps, steps - 1)})
            started = time.perf_counter()
            trainer.train(args.variant, variant, p, tmp / str(steps) / "m", tmp / str(steps) / "r", progress=False)
            minutes = (time.perf_counter() - started) / 60
            m = classify(args.variant, p.arch, tmp / str(steps) / "m" / "backbone.pt", cp,
                         results / "classification" / args.variant, device, progress=False)
            evidence = Evidence(results)  # the learning gate's own paired bootstrap
            row = [f"{steps:6d} steps  {minutes:5.1f} min"]
            for probe in ("linear_top1", "knn_top1"):
                i = evidence.difference(("classification", "all", probe), args.variant, "random")
                row.append(f"{probe} {m[probe]:.3f} ({i.difference:+.3f} [{i.low:+.3f}, {i.high:+.3f}])")
            print("  ".join(row), flush=True)


if __name__ == "__main__":
    main()
