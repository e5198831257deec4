"""Every experiment's evaluation metrics (e.g. a seed sweep run with `dvc exp run --queue`) as one
long table, which the report stage reads to show spreads and base its verdicts on them.

    dvc exp run --queue -S 'seed=0,1,2' -S 'pretrain.seed=0,1,2' && dvc queue start && dvc queue wait
    python -m demystify.report.sweep --out results/sweep/runs.csv && dvc repro -f report
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from ..io import write_csv

KEY_KIND = {"linear_top1": "classification", "knn_top1": "classification", "svm_map": "classification",
            "miou": "segmentation", "pixel_accuracy": "segmentation"}
METRIC = re.compile(r"^(?:.*:)?(?P<model>[^.:]+)\.(?P<set>[^.]+)\.(?P<key>[^.]+)$")


def rows_of(experiments: list[dict]) -> pd.DataFrame:
    """dvc.api.exp_show() rows -> run, kind, model, set, metric, value (evaluation metrics only)."""
    rows = []
    for exp in experiments:
        run = exp.get("Experiment") or exp.get("rev")
        if not run or run == "workspace" and len(experiments) > 1:
            continue  # the workspace duplicates the experiment it was last set to
        for column, value in exp.items():
            m = METRIC.match(str(column))
            if not m or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            key = m["key"]
            kind = "invariance" if re.fullmatch(r"top\d+", key) else KEY_KIND.get(key)
            if kind:
                rows.append({"run": run, "kind": kind, "model": m["model"], "set": m["set"], "metric": key,
                             "value": float(value)})
    return pd.DataFrame(rows, columns=["run", "kind", "model", "set", "metric", "value"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/sweep/runs.csv")
    args = ap.parse_args(argv)
    import dvc.api

    table = rows_of(dvc.api.exp_show())
    write_csv(Path(args.out), table)
    print(f"{table['run'].nunique() if len(table) else 0} runs, {len(table)} values -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
