"""Per-item result files as the evaluation stages write them, for the tests of the report, which
resamples them (demystify.report.evidence reads them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_predictions(
    root: Path, model: str, truth: np.ndarray, pred: np.ndarray, units: list[str] | None = None
) -> None:
    """root/classification/MODEL/per_image.npz: test images img0.png, img1.png, ... with their
    `truth`, `pred` as both the linear and the k-NN probe's prediction, and each image's resampling
    unit where `units` are given (else the file has none: each image its own unit)."""
    folder = root / "classification" / model
    folder.mkdir(parents=True, exist_ok=True)
    paths = np.array([f"img{i}.png" for i in range(len(truth))])
    unit = {} if units is None else {"unit": np.array(units)}
    np.savez(folder / "per_image.npz", path=paths, truth=truth, linear=pred, knn=pred, **unit)
