"""Training curves of every variant overlaid: dvclive's per-variant TSVs (x: the optimizer step)
gathered into one long CSV per quantity (step, variant, value), which the `variants` plot template
colours by variant, and one PNG of all three for places that show images (a pull-request comment).

A variant registers itself: whatever `variants` holds is read, nothing here names one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from demystify.core.figures import pyplot, save_png
from demystify.core.io import write_csv

QUANTITIES = {"loss": "train/loss.tsv", "lr": "train/lr.tsv", "knn_top1": "monitor/knn_top1.tsv"}


class CurvesError(ValueError):
    """A variant's curves are missing; the message names the file."""


def variant_curves(pretrain_dir: Path) -> dict[str, pd.DataFrame]:
    """{quantity: frame(step, value)} of one variant, x in optimizer steps (dvclive's step: the step
    each logging period ended at); an untrained variant has one point, at step 0."""
    summary_path = pretrain_dir / "summary.json"
    if not summary_path.is_file():
        raise CurvesError(f"{summary_path}: not found (run its pretrain stage)")
    steps = int(json.loads(summary_path.read_text())["steps"])
    out = {}
    for quantity, rel in QUANTITIES.items():
        path = pretrain_dir / "plots" / "metrics" / rel
        if path.is_file():
            t = pd.read_csv(path, sep="\t")
            if (
                len(t) and int(t["step"].max()) != steps
            ):  # an older run's period indices, or another run's
                raise CurvesError(
                    f"{path}: last step {int(t['step'].max())}, but summary.json says {steps} "
                    "(rerun its pretrain stage)"
                )
            out[quantity] = pd.DataFrame({"step": t["step"].astype(int), "value": t[quantity]})
    return out


def run_stage(*, pretrain: str | Path, variants: list[str], out_dir: str | Path) -> dict[str, int]:
    """The `summarize_training` stage: out_dir/<quantity>.csv (step, variant, <quantity>) and curves.png."""
    out_dir = Path(out_dir)
    curves = {v: variant_curves(Path(pretrain) / v) for v in variants}
    rows = {}
    for quantity in QUANTITIES:
        long = pd.concat(
            [c[quantity].assign(variant=v) for v, c in curves.items() if quantity in c],
            ignore_index=True,
        )
        long = long.rename(columns={"value": quantity})[["step", "variant", quantity]]
        write_csv(out_dir / f"{quantity}.csv", long)
        rows[quantity] = len(long)
    _figure(curves, out_dir / "curves.png")
    return rows


def _figure(curves: dict[str, dict[str, pd.DataFrame]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(QUANTITIES), figsize=(4.2 * len(QUANTITIES) + 2.0, 3.4))
    colours = {
        v: plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")(i) for i, v in enumerate(curves)
    }
    for ax, quantity in zip(axes, QUANTITIES, strict=True):
        for (
            v,
            c,
        ) in curves.items():  # one colour per variant in every panel, whichever curves it has
            if quantity in c:
                t = c[quantity]
                ax.plot(t["step"], t["value"], marker="o", markersize=3, color=colours[v], label=v)
        ax.set_title(quantity)
        ax.set_xlabel("step")
    handles = [
        plt.Line2D([], [], color=colours[v], marker="o", markersize=3, label=v) for v in curves
    ]
    fig.legend(handles=handles, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (4.2 * len(QUANTITIES) + 2.0), 1))
    save_png(fig, path, dpi=100)
