"""Tables across models: each model's metrics.json gathered into one long CSV, one flat metrics
file for `dvc metrics show/diff`, and a grouped bar chart (PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from demystify.core.figures import pyplot, save_png
from demystify.core.io import write_csv, write_json


class SummaryError(ValueError):
    """A model's results are missing; the message names the file."""


def gather(results_root: str | Path, models: list[str]) -> dict[str, dict]:
    out = {}
    for model in models:
        path = Path(results_root) / model / "metrics.json"
        if not path.is_file():
            raise SummaryError(f"{path}: not found (run its evaluation stage)")
        out[model] = json.loads(path.read_text())
    return out


def long_table(metrics: dict[str, dict], keys: list[str]) -> pd.DataFrame:
    """One row per (model, set, metric key) with a numeric value."""
    rows = [
        {"model": model, "set": name, "metric": key, "value": float(values[key])}
        for model, per_set in metrics.items()
        for name, values in per_set.items()
        if isinstance(values, dict)
        for key in keys
        if key in values
    ]
    return pd.DataFrame(rows, columns=["model", "set", "metric", "value"])


def bar_chart(table: pd.DataFrame, path: str | Path, title: str, ylabel: str) -> None:
    """Sets (or set/metric pairs) on the x axis, one bar per model, side by side."""
    plt = pyplot()
    group = table["set"] + " " + table["metric"] if table["metric"].nunique() > 1 else table["set"]
    wide = table.assign(group=group).pivot(index="group", columns="model", values="value")
    wide = wide[list(dict.fromkeys(table["model"]))]  # models in params order
    fig, ax = plt.subplots(
        figsize=(max(6.0, 1.3 * len(wide.index) * max(1, len(wide.columns)) / 4), 4.2)
    )
    wide.plot.bar(ax=ax, width=0.85, rot=20)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def summarize(
    results_root: str | Path,
    models: list[str],
    out_dir: str | Path,
    keys: list[str],
    title: str,
    ylabel: str,
    plot_keys: list[str] | None = None,
) -> pd.DataFrame:
    """Classification and segmentation metrics are flat (metric -> value): they become set "all"."""
    out_dir = Path(out_dir)
    metrics = {
        model: (m if any(isinstance(v, dict) for v in m.values()) else {"all": m})
        for model, m in gather(results_root, models).items()
    }
    table = long_table(metrics, keys)
    write_csv(out_dir / "table.csv", table)
    flat = {
        model: {
            name: {k: v for k, v in values.items() if k in keys}
            for name, values in per_set.items()
            if isinstance(values, dict)
        }
        for model, per_set in metrics.items()
    }
    write_json(out_dir / "metrics.json", flat)
    shown = table[table.metric.isin(plot_keys or keys)]
    bar_chart(shown, out_dir / f"{Path(results_root).name}.png", title, ylabel)
    return table


KINDS = {  # kind -> (title, y label)
    "invariance": ("Invariance per evaluation set (top-{k} neurons)", "invariance score"),
    "classification": ("Classification on frozen features", "top-1 / mAP"),
    "segmentation": ("Segmentation with a frozen backbone", "mIoU / pixel accuracy"),
}
# metric keys per kind (invariance: one per K of params)
KEYS = {
    "classification": ["linear_top1", "knn_top1", "svm_map"],
    "segmentation": ["miou", "pixel_accuracy"],
}


def run_stage(
    *, kind: str, results_dir: str | Path, models: list[str], out_dir: str | Path, ks: list[int]
) -> pd.DataFrame:
    """The `summarize@<kind>` stage: every model's results_dir/MODEL/metrics.json into out_dir."""
    if kind not in KINDS:
        raise SummaryError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    title, ylabel = KINDS[kind]
    keys = [f"top{k}" for k in ks] if kind == "invariance" else KEYS[kind]
    return summarize(
        results_dir,
        models,
        out_dir,
        keys,
        title.format(k=keys[0][3:]),
        ylabel,
        plot_keys=keys[:1] if kind == "invariance" else None,
    )
