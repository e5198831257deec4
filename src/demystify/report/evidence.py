"""The per-item results behind each metric, as the bootstrap needs them: for a model and a metric,
its value as a function of bootstrap weights over the test items.

- classification (`linear_top1`, `knn_top1`): results/classification/MODEL/per_image.npz, one
  prediction per test image;
- segmentation (`miou`): results/segmentation/MODEL/per_image.npz, one confusion matrix per image;
- invariance (`topK` of a set): results/invariance/MODEL/contributions/SET.npz, one row per
  transformation set; the set "mean" averages the sets, each resampled on its own.

Two models are comparable when their items are the same (the same test paths, or the same number
of transformation sets); else there is no interval and the comparison is not measured.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from ..evaluation.invariance import SetContributions
from . import intervals

Metric = tuple[str, str, str]  # (kind, set, key), as in claims.py


class Evidence:
    def __init__(self, results_root: str | Path, resamples: int = intervals.RESAMPLES, level: float = intervals.LEVEL,
                 seed: int = 0):
        self.root, self.resamples, self.level, self.seed = Path(results_root), resamples, level, seed
        self._values = cache(self._compute)

    # --- the items of one (model, stratum) ------------------------------------------------------

    def _items(self, kind: str, model: str, set_name: str, key: str):
        """(item ids, metric function of weights) or None when the files are missing."""
        if kind == "classification" and key in ("linear_top1", "knn_top1"):
            path = self.root / "classification" / model / "per_image.npz"
            if not path.is_file():
                return None
            with np.load(path) as f:
                correct = f[key.removesuffix("_top1")] == f["truth"]
                return tuple(f["path"].tolist()), intervals.accuracy(correct)
        if kind == "segmentation" and key == "miou":
            path = self.root / "segmentation" / model / "per_image.npz"
            if not path.is_file():
                return None
            with np.load(path) as f:
                return tuple(f["path"].tolist()), intervals.mean_iou(f["confusion"])
        if kind == "invariance" and key.startswith("top"):
            path = self.root / "invariance" / model / "contributions" / f"{set_name}.npz"
            if not path.is_file():
                return None
            c, k = SetContributions.load(path), int(key.removeprefix("top"))
            return (set_name, len(c.set_class)), lambda w: c.scores(w, (k,))[k]
        return None

    def strata(self, metric: Metric) -> list[str]:
        kind, set_name, _ = metric
        if kind == "invariance" and set_name == "mean":
            folder = self.root / "invariance"
            return sorted({p.stem for p in folder.glob("*/contributions/*.npz")})
        return [set_name]

    def _compute(self, kind: str, model: str, set_name: str, key: str):
        """(item ids, the metric on all items, the metric on every bootstrap draw) or None."""
        found = self._items(kind, model, set_name, key)
        if found is None:
            return None
        ids, metric = found
        n = ids[1] if kind == "invariance" else len(ids)
        seed = self.seed + sum(map(ord, f"{kind}/{set_name}"))  # the same draws for every model
        return ids, float(metric(np.ones((1, n)))[0]), metric(intervals.draws(n, self.resamples, seed))

    # --- intervals ---------------------------------------------------------------------------------

    def difference(self, metric: Metric, a: str, b: str) -> intervals.Interval | None:
        """Metric of model a minus model b with its paired-bootstrap interval (mean over strata)."""
        kind, _, key = metric
        full, draws = [], []
        for stratum in self.strata(metric):
            va, vb = self._values(kind, a, stratum, key), self._values(kind, b, stratum, key)
            if va is None or vb is None or va[0] != vb[0]:
                return None
            full.append(va[1] - vb[1])
            draws.append(va[2] - vb[2])
        if not full:
            return None
        return intervals.interval(float(np.mean(full)), np.mean(draws, axis=0), self.level)
