"""A pull-request comment in markdown: `dvc metrics diff`, `dvc params diff` and the changed plots
against a base revision, ready for `cml comment create --publish reports/pr.md`.

    python -m demystify.report.pr_comment --base main --out reports/pr.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..io import atomic_path


def _dvc(*args: str) -> str:
    proc = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"`dvc {' '.join(args)}` failed:\n\n```\n{proc.stderr.strip()}\n```"
    return proc.stdout.strip() or "_no changes_"


def comment(base: str, out: Path, plots_dir: Path) -> str:
    plots = subprocess.run(["dvc", "plots", "diff", base, "--out", str(plots_dir)], capture_output=True, text=True)
    pictures = sorted(p for p in plots_dir.rglob("*.png")) if plots.returncode == 0 else []
    report = Path("reports/report.md")
    verdicts = [line for line in report.read_text().splitlines() if line.startswith("### Claim")] \
        if report.is_file() else []
    parts = [
        f"## demystify: this branch against `{base}`",
        "### Claims (this branch)\n\n" + ("\n".join(f"- {v.removeprefix('### ')}" for v in verdicts)
                                          or "_no report: run `dvc repro`_"),
        "### Metrics\n\n" + _dvc("metrics", "diff", base, "--md"),
        "### Params\n\n" + _dvc("params", "diff", base, "--md"),
        "### Plots\n\n" + ("\n\n".join(f"![{p.stem}]({p.as_posix()})" for p in pictures[:12])
                           + f"\n\nAll plots, both revisions: `{plots_dir}/index.html`"
                           if pictures else "_no image plots_"),
    ]
    text = "\n\n".join(parts) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main")
    ap.add_argument("--out", default="reports/pr.md")
    ap.add_argument("--plots", default="reports/pr_plots")
    args = ap.parse_args(argv)
    print(comment(args.base, Path(args.out), Path(args.plots)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
