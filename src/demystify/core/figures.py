"""Figures of the evaluation stages: a headless pyplot, and PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

from demystify.core.io import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported only when drawing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int) -> None:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
