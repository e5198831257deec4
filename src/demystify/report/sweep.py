"""The evaluation metrics of every experiment that differs from the workspace in seeds alone (a
seed sweep run with `dvc exp run --queue`) as one long table, which the report stage depends on
to show spreads and base its verdicts on them.

    dvc exp run --queue -S 'pretrain.seed=0,1,2' && dvc queue start   # then `dvc queue status` until done
    make sweep-table && dvc repro          # the report depends on results/sweep/runs.csv

Pooling runs that differ in anything but a seed would mix settings, so such experiments are left
out (and listed on stderr). The workspace row is left out too: the report adds the current run
itself and drops any sweep run with exactly its metrics, so no run is counted twice.
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


def flatten(params: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_seed(param: str) -> bool:
    return param.rsplit(".", 1)[-1].endswith("seed")


def differences(exp: dict, params: dict) -> list[str]:
    """The params (other than seeds) in which an experiment row differs from `params` (flattened)."""
    return sorted(k for k, v in params.items()
                  if not is_seed(k) and exp.get(k) is not None and exp.get(k) != v)


def rows_of(experiments: list[dict], params: dict | None = None) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """dvc.api.exp_show() rows -> (run, kind, model, set, metric, value) of the evaluation metrics,
    and the experiments left out because they differ from `params` (flattened) in more than seeds."""
    rows, left_out = [], {}
    for exp in experiments:
        run = exp.get("Experiment") or exp.get("rev")
        if not run or exp.get("rev") == "workspace" or run == "workspace":
            continue  # the current run: the report adds it itself
        differ = differences(exp, params or {})
        if differ:
            left_out[str(run)] = differ
            continue
        for column, value in exp.items():
            m = METRIC.match(str(column))
            if not m or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            key = m["key"]
            kind = "invariance" if re.fullmatch(r"top\d+", key) else KEY_KIND.get(key)
            if kind:
                rows.append({"run": run, "kind": kind, "model": m["model"], "set": m["set"], "metric": key,
                             "value": float(value)})
    return pd.DataFrame(rows, columns=["run", "kind", "model", "set", "metric", "value"]), left_out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/sweep/runs.csv")
    args = ap.parse_args(argv)
    import dvc.api

    from ..config import read_yaml

    table, left_out = rows_of(dvc.api.exp_show(), flatten(read_yaml("params.yaml")))
    for run, differ in left_out.items():
        print(f"left out {run}: differs in {', '.join(differ[:5])}", file=sys.stderr)
    write_csv(Path(args.out), table)
    print(f"{table['run'].nunique() if len(table) else 0} runs, {len(table)} values -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
