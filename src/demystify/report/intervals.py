"""95 % confidence intervals of paired differences, by the paired bootstrap over the independent unit.

Two models are scored on the same test items, so their difference is resampled jointly: each of B
draws picks n *units* with replacement (the same units for both models) and recomputes both
metrics with each item weighted by how often its unit was drawn. The unit is what is independent:
an instance for classification (its test images go together), an object (ALOI), a video (GOT-10k),
an instance or photograph (PASCAL3D+), an image (segmentation). A draw is a row of counts
(`weights[b, u]` = how often unit u was drawn), which lets every metric be recomputed for all
draws at once with matrix products:

- accuracy: the share of correctly classified test images;
- mIoU: per-image confusion matrices summed over the draw, then the IoU of each class present;
- invariance: the paper's score with its global thresholds fixed, the units resampled with
  multiplicity and an undrawn class left out of the class mean (evaluation/invariance.py).

Units are named by family ("aloi:12", "got10k:<video>"): every set of a family gets the same draws,
so a mean over sets that show the same objects resamples them jointly.

With several pretraining seeds of each model (replicates), the interval is a two-level bootstrap:
each draw resamples the seeds of each side, then the units (`two_level`). With one seed it covers
the test items only: training randomness is not in it.

The interval is the bootstrap's central 95 % re-centred on the full-sample difference (`interval`);
its two-sided p-value (`p_value`) feeds Holm's correction within a claim (claims.py).

With several runs of one setting from a `dvc exp` sweep, the runs' paired differences give another
interval, over training randomness: Student's t interval of their mean (`across_runs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    difference: float  # on the full test set
    low: float
    high: float
    p: float | None = None  # two-sided bootstrap p-value of "no difference"
    seeds: int = (
        1  # pretraining seeds on the side with fewer: 1 = the interval covers test items only
    )

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def draws(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) counts: how often each of the n items is in each bootstrap sample."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    return np.stack([np.bincount(row, minlength=n) for row in picks]).astype(np.float64)


def unit_draws(n: int, resamples: int = RESAMPLES, family: str = "") -> np.ndarray:
    """(resamples, n) counts over a family's n sorted units, the same for every set of the family."""
    return draws(n, resamples, seed=sum(map(ord, family)) + 7919 * n)


def p_value(full: float, spread: np.ndarray) -> float:
    """Two-sided p-value of "no difference": how often the centred bootstrap differences reach
    the observed one in size (add-one, so never 0)."""
    centred = np.asarray(spread, dtype=np.float64) - np.mean(spread)
    return float((1 + np.sum(np.abs(centred) >= abs(full) - 1e-12)) / (len(centred) + 1))


def seed_weights(seeds: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, seeds) bootstrap counts over a model's pretraining seeds, divided by their number
    (rows sum to 1); one seed: all ones."""
    if seeds == 1:
        return np.ones((resamples, 1))
    return draws(seeds, resamples, seed) / seeds


def two_level(
    per_seed_full: list[float], per_seed_draws: list[np.ndarray], seed: int = 0
) -> tuple[float, np.ndarray]:
    """A model's metric over its seeds: the full value is the seeds' mean; each bootstrap draw
    averages the seeds drawn (with replacement) for that draw, each evaluated on the draw's units."""
    stacked = np.stack(per_seed_draws, axis=1)  # (B, seeds)
    w = seed_weights(len(per_seed_full), len(stacked), seed)
    return float(np.mean(per_seed_full)), (stacked * w).sum(1)


def interval(full: float, spread: np.ndarray, level: float = LEVEL, seeds: int = 1) -> Interval:
    """The central `level` range of the bootstrap differences `spread`, re-centred on the
    full-sample difference. Why re-centred: the invariance score keeps each class's top-K neurons,
    and a draw that repeats transformation sets makes per-class rates noisier, so its top-K mean
    higher; the resampled differences shift away from the full-sample one (seen: an interval that
    excluded its own point estimate). The bootstrap measures the spread; the point is the data's."""
    spread = np.asarray(spread, dtype=np.float64)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(spread - spread.mean(), [tail, 100 - tail]) + full
    return Interval(float(full), float(low), float(high), p_value(full, spread), seeds)


def across_runs(differences, level: float = LEVEL) -> Interval | None:
    """t interval of the mean of per-run paired differences (one per run); None under two runs."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    mean = float(d.mean())
    return Interval(mean, mean - half, mean + half)


def paired(
    metric_a, metric_b, n: int, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Interval:
    """`metric_x(weights)` maps (B, n) counts to (B,) values; ones give the full-sample value."""
    full = np.ones((1, n))
    w = draws(n, resamples, seed)
    return interval(metric_a(full)[0] - metric_b(full)[0], metric_a(w) - metric_b(w), level)


def accuracy(correct: np.ndarray):
    correct = np.asarray(correct, dtype=np.float64)
    return lambda w: (w @ correct) / w.sum(1)


def mean_iou(confusions: np.ndarray):
    """`confusions` (n, C, C): one confusion matrix (truth x prediction) per test image."""
    flat = np.asarray(confusions, dtype=np.float64).reshape(len(confusions), -1)
    classes = confusions.shape[1]

    def metric(w):
        conf = (w @ flat).reshape(len(w), classes, classes)
        tp = np.diagonal(conf, axis1=1, axis2=2)
        union = conf.sum(1) + conf.sum(2) - tp
        iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
        return np.nanmean(iou, axis=1)

    return metric
