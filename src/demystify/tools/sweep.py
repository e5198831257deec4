"""The evaluation metrics of every experiment that differs from the workspace in seeds alone (a
seed sweep run with `dvc exp run --queue`) as one long table, which the report stage depends on
to show spreads and base its verdicts on them.

    dvc exp run --queue -S 'pretrain.seed=0,1,2' && dvc queue start   # then `dvc queue status` until done
    make sweep-table && dvc repro          # the report depends on results/sweep/runs.csv

Each experiment is read from its own commit: params.yaml as YAML values and the three summary
files the report reads (results/summary/<kind>/metrics.json), never dvclive's training metrics.
`dvc.api.exp_show()` only lists the experiments: its cells are display strings.

The baseline is the workspace: the report pools the sweep's runs with the workspace's own run, so
an experiment joins only when its params, seeds aside, equal the workspace's params.yaml (a sweep
at another setting, e.g. `-S scale=smoke` beside a default-scale workspace, is left out and listed
on stderr). A run is its seed values: an experiment with the workspace's seeds is the workspace's
run, and two experiments with the same seeds are one run, so each run is counted once. The table
names a run by the seeds in which it differs from the workspace (`pretrain.seed=1`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from demystify.core.io import write_csv

KINDS = ("invariance", "classification", "segmentation")
SUMMARY = "results/summary/{kind}/metrics.json"  # what the report stage reads (build.load_run)
COLUMNS = ["run", "kind", "model", "set", "metric", "value"]


class SweepError(ValueError):
    """The workspace has no params or results to pool with; the message names the file."""


@dataclass
class Run:
    name: str  # the experiment's name, or "workspace"
    params: dict  # flattened params.yaml
    metrics: dict | None  # {kind: {model: {set: {key: value}}}}; None: no results (queued, failed)
    state: str = ""


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


MISSING = object()


def differences(params: dict, base: dict, seeds: bool) -> list[str]:
    """The flattened params (seeds only, or all but seeds) whose values differ between the two, a key
    that only one has included."""
    return sorted(
        k
        for k in params.keys() | base.keys()
        if is_seed(k) == seeds and params.get(k, MISSING) != base.get(k, MISSING)
    )


def read_run(name: str, read, state: str = "") -> Run:
    """A run from `read(path) -> text or None` (the workspace's files or a commit's)."""
    text = read("params.yaml")
    if text is None:
        raise SweepError(f"{name}: params.yaml not found")
    params = flatten(yaml.safe_load(text) or {})
    metrics = {}
    for kind in KINDS:
        body = read(SUMMARY.format(kind=kind))
        if body is None:
            return Run(name, params, None, state)  # not (yet) reproduced: nothing to pool
        metrics[kind] = json.loads(body)
    return Run(name, params, metrics, state)


def pool(workspace: Run, others: list[Run]) -> tuple[dict[str, Run], dict[str, str]]:
    """{run label: run} of the experiments that differ from the workspace in seeds alone, each seed
    tuple once (the workspace's own left out: the report adds it itself), and why each other
    experiment is left out."""
    runs: dict[str, Run] = {}
    left_out: dict[str, str] = {}
    for run in others:
        if run.metrics is None:
            left_out[run.name] = f"no results ({run.state or 'not reproduced'})"
            continue
        differ = differences(run.params, workspace.params, seeds=False)
        if differ:
            shown = ", ".join(differ[:5]) + (
                f" and {len(differ) - 5} more" if len(differ) > 5 else ""
            )
            left_out[run.name] = f"differs from the workspace in {shown}"
            continue
        seeds = differences(run.params, workspace.params, seeds=True)
        if not seeds:
            left_out[run.name] = "the workspace's seeds: the workspace's run, counted once"
            continue
        label = " ".join(f"{k}={run.params.get(k)}" for k in seeds)
        if label in runs:
            left_out[run.name] = f"the seeds of {runs[label].name} ({label}): counted once"
            continue
        runs[label] = run
    return runs, left_out


def rows_of(runs: dict[str, Run]) -> pd.DataFrame:
    rows = [
        {"run": label, "kind": kind, "model": model, "set": s, "metric": key, "value": float(value)}
        for label, run in runs.items()
        for kind, per_model in run.metrics.items()
        for model, per_set in per_model.items()
        for s, per_key in per_set.items()
        for key, value in per_key.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def experiments(repo: str = ".") -> tuple[Run, list[Run]]:
    """The workspace's run and every experiment of the current commit (and the commit itself)."""
    import dvc.api

    def workspace_file(path: str) -> str | None:
        p = Path(repo) / path
        return p.read_text() if p.is_file() else None

    workspace = read_run("workspace", workspace_file)
    others = []
    for row in dvc.api.exp_show(repo):
        rev = row.get("rev")
        if not rev or rev == "workspace":
            continue
        fs = dvc.api.DVCFileSystem(repo, rev=rev)

        def commit_file(path: str, fs=fs) -> str | None:
            return fs.read_text(path) if fs.isfile(path) else None

        others.append(
            read_run(str(row.get("Experiment") or rev), commit_file, str(row.get("State") or ""))
        )
    return workspace, others


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/sweep/runs.csv")
    ap.add_argument("--repo", default=".")
    args = ap.parse_args(argv)
    try:
        workspace, others = experiments(args.repo)
    except SweepError as exc:
        print(f"sweep-table: {exc}", file=sys.stderr)
        return 1
    if workspace.metrics is None:
        print(
            "sweep-table: the workspace has no results/summary/*/metrics.json (run `dvc repro` first)",
            file=sys.stderr,
        )
        return 1
    runs, left_out = pool(workspace, others)
    for name, why in left_out.items():
        print(f"left out {name}: {why}", file=sys.stderr)
    table = rows_of(runs)
    write_csv(Path(args.out), table)
    seeds = differences(workspace.params, {}, seeds=True)
    print(
        f"{1 + len(runs)} run{'s' if runs else ''}, each counted once: the workspace and "
        + (", ".join(f"{label} ({run.name})" for label, run in runs.items()) or "no experiment")
        + f"; {len(table)} values -> {args.out} (seeds compared: {', '.join(seeds)})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
