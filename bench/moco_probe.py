"""Which pretraining settings learn at the default scale: train one variant under several
settings and print, every `log_every` steps, the mean loss and the kNN top-1 monitor.

    python bench/moco_probe.py --variant moco_object_centric \
        --config base: --config crop05:min_crop_scale=0.5 --config long:steps=900

Each `--config NAME:KEY=VALUE,...` overrides the `pretrain` params of params.yaml. dvclive is
not needed (its logger is replaced by one that records in memory), so this runs wherever torch
and pydantic are installed, e.g. on a bare GPU machine with PYTHONPATH=src.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from demystify.core import config
from demystify.ssl import train as trainer


class _MemoryLive:
    """Stands in for dvclive.Live: keeps the logged metrics, one dict per logging period."""

    def __init__(self):
        self.rows, self.row = [], {}

    def log_metric(self, name, value, timestamp=False):
        self.row[name] = value

    def next_step(self):
        self.rows.append(self.row)
        self.row = {}

    def end(self):
        pass


def _value(text: str):
    return config.parse_yaml(text)  # YAML 1.2, as DVC reads params.yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variant", default="moco_object_centric")
    ap.add_argument("--config", action="append", default=[], help="NAME:KEY=VALUE,KEY=VALUE")
    args = ap.parse_args()
    params = config.load("pretrain", "variants", path=args.params)
    base, variant = params["pretrain"], params["variants"][args.variant]
    summary = []
    for spec in args.config or ["base:"]:
        name, _, body = spec.partition(":")
        update = {k: _value(v) for k, v in (kv.split("=", 1) for kv in body.split(",") if kv)}
        p = base.model_validate({**base.model_dump(), **update})
        live = _MemoryLive()

        def replay(results_dir, history, _live=live):  # stands in for the dvclive folder
            for record in history:
                trainer._log_period(_live, record)
            return _live

        trainer._write_live = replay
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = trainer.train(
                args.variant, variant, p, Path(tmp) / "m", Path(tmp) / "r", progress=False
            )
        seconds = time.perf_counter() - started
        curve = " ".join(
            f"{r.get('train/loss', float('nan')):.2f}/{r.get('monitor/knn_top1', 0):.2f}"
            for r in live.rows
        )
        print(f"{name:>14} {update} {seconds:.0f}s  loss/knn per period: {curve}", flush=True)
        summary.append(
            (name, live.rows[0].get("train/loss"), result.get("final_loss"), result.get("knn_top1"))
        )
    print("\nconfig          first-period loss  last-period loss  final kNN", file=sys.stderr)
    for name, first, last, knn in summary:
        print(f"{name:>14}  {first:16.3f}  {last:15.3f}  {knn:9.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
