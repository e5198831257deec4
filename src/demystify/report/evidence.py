"""The per-item results behind each metric, as the bootstrap needs them: for a model and a metric,
its value as a function of bootstrap weights over the independent units of the test items.

- classification (`linear_top1`, `knn_top1`): results/classification/MODEL/per_image.npz, one
  prediction per test image, with its unit (the instance where the data set names it, else the
  image);
- segmentation (`miou`): results/segmentation/MODEL/per_image.npz, one confusion matrix per image
  (the unit);
- invariance (`topK` of a set): results/invariance/MODEL/contributions/SET.npz, the score's terms
  per (transformation set, unit); the set "mean" averages the sets not at ceiling, sets of one
  family (the three ALOI sets: the same objects) resampled with the same draws.

A model may have replicates (the same setting, other pretraining seeds): the interval is then the
two-level bootstrap of intervals.py, seeds then units. Two models are comparable when their items
and units are the same; else there is no interval and the comparison is not measured.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from demystify.evaluation.invariance import SetContributions
from demystify.report import intervals

Metric = tuple[str, str, str]  # (kind, set, key), as in claims.py


def _by_unit(item_metric, item_units: np.ndarray):
    """(sorted units, metric of unit weights) from a metric of item weights and each item's unit."""
    units, inverse = np.unique(np.asarray(item_units).astype(str), return_inverse=True)
    return units, lambda w: item_metric(np.asarray(w, dtype=np.float64)[:, inverse])


def _family(units: np.ndarray, fallback: str) -> str:
    """The name before ':' when every unit has the same one ("aloi"), else the set's own."""
    prefixes = {u.split(":", 1)[0] for u in units if ":" in u}
    return prefixes.pop() if len(prefixes) == 1 and all(":" in u for u in units) else fallback


class Evidence:
    def __init__(
        self,
        results_root: str | Path,
        resamples: int = intervals.RESAMPLES,
        level: float = intervals.LEVEL,
        seed: int = 0,
        replicates: dict[str, list[str]] | None = None,
        ceiling_sets: tuple[str, ...] = (),
    ):
        """`replicates`: model -> its seed replicates (itself first); `ceiling_sets`: invariance
        sets left out of the "mean"."""
        self.root, self.resamples, self.level, self.seed = (
            Path(results_root),
            resamples,
            level,
            seed,
        )
        self.replicates = replicates or {}
        self.ceiling_sets = tuple(ceiling_sets)
        self._values = cache(self._compute)

    def seeds_of(self, model: str) -> list[str]:
        return self.replicates.get(model, [model])

    # --- the items of one (model, stratum) ------------------------------------------------------

    def _items(self, kind: str, model: str, set_name: str, key: str):
        """(item ids, sorted units, metric function of unit weights) or None when files are missing."""
        if kind == "classification" and key in ("linear_top1", "knn_top1"):
            path = self.root / "classification" / model / "per_image.npz"
            if not path.is_file():
                return None
            with np.load(path) as f:
                correct = f[key.removesuffix("_top1")] == f["truth"]
                paths = f["path"].astype(str)
                units = f["unit"].astype(str) if "unit" in f.files else paths
            return (tuple(paths.tolist()), *_by_unit(intervals.accuracy(correct), units))
        if kind == "segmentation" and key == "miou":
            path = self.root / "segmentation" / model / "per_image.npz"
            if not path.is_file():
                return None
            with np.load(path) as f:
                paths = f["path"].astype(str)
                return (tuple(paths.tolist()), *_by_unit(intervals.mean_iou(f["confusion"]), paths))
        if kind == "invariance" and key.startswith("top"):
            path = self.root / "invariance" / model / "contributions" / f"{set_name}.npz"
            if not path.is_file():
                return None
            c, k = SetContributions.load(path), int(key.removeprefix("top"))
            units = c.units
            return (set_name, tuple(units.tolist())), units, lambda w: c.scores(w, (k,))[k]
        return None

    def strata(self, metric: Metric) -> list[str]:
        kind, set_name, _ = metric
        if kind == "invariance" and set_name == "mean":
            folder = self.root / "invariance"
            found = sorted({p.stem for p in folder.glob("*/contributions/*.npz")})
            return [s for s in found if s not in self.ceiling_sets]
        return [set_name]

    def _compute(self, kind: str, model: str, set_name: str, key: str):
        """(item ids, the metric on all items, the metric on every bootstrap draw) or None."""
        found = self._items(kind, model, set_name, key)
        if found is None:
            return None
        ids, units, metric = found
        family = _family(
            units, f"{kind}/{set_name}"
        )  # the same draws for every model and set of a family
        weights = intervals.unit_draws(len(units), self.resamples, f"{self.seed}/{family}")
        return ids, float(metric(np.ones((1, len(units))))[0]), metric(weights)

    def _side(self, kind: str, model: str, stratum: str, key: str, seed: int):
        """(item ids, full value, draws) of a model over its seeds, or None."""
        values = [self._values(kind, m, stratum, key) for m in self.seeds_of(model)]
        if any(v is None for v in values) or len({v[0] for v in values}) != 1:
            return None
        full, spread = intervals.two_level([v[1] for v in values], [v[2] for v in values], seed)
        return values[0][0], full, spread

    # --- intervals ---------------------------------------------------------------------------------

    def value(self, metric: Metric, model: str) -> float | None:
        """The metric of a model (mean over its seeds and, for "mean", over the strata)."""
        kind, _, key = metric
        found = [self._side(kind, model, s, key, 0) for s in self.strata(metric)]
        if not found or any(f is None for f in found):
            return None
        return float(np.mean([f[1] for f in found]))

    def difference(self, metric: Metric, a: str, b: str) -> intervals.Interval | None:
        """Metric of model a minus model b with its paired-bootstrap interval (mean over strata);
        two-level (seeds, then units) where a model has replicates."""
        kind, _, key = metric
        full, spread = [], []
        seed_a, seed_b = (self.seed + sum(map(ord, f"{m}/{kind}/{key}")) for m in (a, b))
        for stratum in self.strata(metric):
            va, vb = (
                self._side(kind, a, stratum, key, seed_a),
                self._side(kind, b, stratum, key, seed_b),
            )
            if va is None or vb is None or va[0] != vb[0]:
                return None
            full.append(va[1] - vb[1])
            spread.append(va[2] - vb[2])
        if not full:
            return None
        seeds = min(len(self.seeds_of(a)), len(self.seeds_of(b)))
        return intervals.interval(float(np.mean(full)), np.mean(spread, axis=0), self.level, seeds)
