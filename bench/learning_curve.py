"""The frontier of learning against CPU time: for each candidate setting and step budget, train a
variant from scratch (warm-up and cosine sized to the budget), fit the classification probes on
its frozen features and on the untrained network's (the same width), and print the learning
gate's measure (linear and kNN top-1 minus the untrained network's, 95 % paired bootstrap over
instances) beside the minutes of pretraining, wall and CPU. Scored on the VALIDATION split
(classification.train_split -> val): choosing the default here never looks at the test split.

    python bench/learning_curve.py                       # after `make run` (needs data/world)
    python bench/learning_curve.py --steps 600 --candidate 'half width, 64 px: width=0.5 image_size=64'

`--candidate 'LABEL: KEY=VALUE ...'` overrides `pretrain` params of params.yaml; `--set KEY=VALUE`
applies to every candidate. Writes a CSV and a plot (margin against minutes, one line per
candidate) under --out.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from demystify.backbone import backbone
from demystify.core import config
from demystify.evaluation import classification
from demystify.evaluation.features import Model
from demystify.report.evidence import Evidence
from demystify.ssl import train as trainer

CANDIDATES = [
    "resnet18, 48 px: width=1.0 image_size=48 steps=600",
    "resnet18 x0.5, 64 px: width=0.5 image_size=64 steps=600,1200,1800",
    "resnet18 x0.5, 48 px: width=0.5 image_size=48 steps=1200",
    "resnet18 x0.25, 64 px: width=0.25 image_size=64 steps=1200,2400",
]
PROBES = ("linear_top1", "knn_top1")


def parse_candidate(text: str, steps: list[int]) -> tuple[str, dict, list[int]]:
    """'LABEL: KEY=VALUE ...' -> (label, pretrain overrides, budgets); `steps=300,600` sets its own budgets."""
    label, _, sets = text.rpartition(":") if ":" in text else (text, "", text)
    overrides = dict(s.split("=", 1) for s in sets.split())
    budgets = [int(v) for v in overrides.pop("steps").split(",")] if "steps" in overrides else steps
    return label.strip(), {k: config.parse_yaml(v) for k, v in overrides.items()}, budgets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variant", default="moco_object_centric")
    ap.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[600, 1200],
        help="budgets of a candidate without steps=",
    )
    ap.add_argument(
        "--candidate", action="append", help="'LABEL: KEY=VALUE ...' (default: the built-in list)"
    )
    ap.add_argument(
        "--set", action="append", default=[], help="a pretrain param for every candidate, KEY=VALUE"
    )
    ap.add_argument(
        "--out", default="bench/results/frontier", help="folder for frontier.csv and frontier.png"
    )
    ap.add_argument(
        "--append", action="store_true", help="keep the rows already in --out's frontier.csv"
    )
    args = ap.parse_args()
    params = config.load("pretrain", "variants", "classification", path=args.params)
    base, variant = params["pretrain"], params["variants"][args.variant]
    cp = params["classification"].model_copy(
        update={"test_split": "val"}
    )  # tuning never sees the test split
    fixed = {k: config.parse_yaml(v) for k, v in (s.split("=", 1) for s in args.set)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read(out / "frontier.csv") if args.append else []
    print(
        f"{args.variant} on {device}, {torch.get_num_threads()} threads; validation split; margin = top-1 minus "
        "the untrained network's at the same width [95 % paired bootstrap]",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for text in args.candidate or CANDIDATES:
            label, sets, budgets = parse_candidate(text, args.steps)
            overrides = {**sets, **fixed}
            results = tmp / label.replace(" ", "_").replace(",", "") / "results"
            width = overrides.get("width", base.width)
            torch.manual_seed(
                base.seed
            )  # the untrained network of pretrain@random at this width: the seeded init
            model = backbone(base.arch, width=width)
            untrained = tmp / f"untrained-{width}.pt"
            torch.save(model.state_dict(), untrained)
            classification.run_stage(
                Model("random", base.arch, untrained),
                cp,
                results / "classification" / "random",
                device=device,
                progress=False,
            )
            for steps in budgets:
                p = base.model_validate(
                    {
                        **base.model_dump(),
                        **overrides,
                        "steps": steps,
                        "log_every": steps,
                        "warmup_steps": min(base.warmup_steps, steps - 1),
                    }
                )
                run = results.parent / str(steps)
                wall, cpu = time.perf_counter(), time.process_time()
                trainer.train(args.variant, variant, p, run / "m", run / "r", progress=False)
                wall, cpu = (time.perf_counter() - wall) / 60, (time.process_time() - cpu) / 60
                m = classification.run_stage(
                    Model(args.variant, p.arch, run / "m" / "backbone.pt"),
                    cp,
                    results / "classification" / args.variant,
                    device=device,
                    progress=False,
                )
                evidence = Evidence(results)  # the learning gate's own paired bootstrap
                row = {
                    "candidate": label,
                    "steps": steps,
                    "wall_min": round(wall, 2),
                    "cpu_min": round(cpu, 2),
                }
                shown = [f"{label:34s} {steps:5d} steps {wall:5.1f} min ({cpu:5.1f} CPU)"]
                for probe in PROBES:
                    i = evidence.difference(
                        ("classification", "all", probe), args.variant, "random"
                    )
                    row.update(
                        {
                            probe: round(m[probe], 4),
                            f"{probe}_margin": round(i.difference, 4),
                            f"{probe}_low": round(i.low, 4),
                            f"{probe}_high": round(i.high, 4),
                        }
                    )
                    shown.append(
                        f"{probe} {m[probe]:.3f} ({i.difference:+.3f} [{i.low:+.3f}, {i.high:+.3f}])"
                    )
                rows.append(row)
                print("  ".join(shown), flush=True)
                write(rows, out)


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [
            {k: (v if k == "candidate" else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def write(rows: list[dict], out: Path) -> None:
    with open(out / "frontier.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, probe in zip(axes, PROBES, strict=True):
        for label in dict.fromkeys(r["candidate"] for r in rows):
            mine = sorted((r for r in rows if r["candidate"] == label), key=lambda r: r["steps"])
            x = [r["wall_min"] for r in mine]
            y = [100 * r[f"{probe}_margin"] for r in mine]
            err = [
                [100 * (r[f"{probe}_margin"] - r[f"{probe}_low"]) for r in mine],
                [100 * (r[f"{probe}_high"] - r[f"{probe}_margin"]) for r in mine],
            ]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        ax.axhline(10, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{probe.split('_')[0]} probe (validation split)")
        ax.set_xlabel("pretraining minutes (wall, this machine)")
    axes[0].set_ylabel("top-1 minus untrained (points, 95 % CI)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
