"""95 % confidence intervals of paired differences, by the paired bootstrap.

Two models are scored on the same test items (images, or the invariance score's transformation
sets), so their difference is resampled jointly: each of B draws picks n items with replacement
(the same items for both models) and recomputes both metrics. A draw is a row of counts
(`weights[b, i]` = how often item i was drawn), which lets every metric be recomputed for all
draws at once with matrix products:

- accuracy: the share of correctly classified test images;
- mIoU: per-image confusion matrices summed over the draw, then the IoU of each class present;
- invariance: the paper's score with its global thresholds fixed and its transformation sets
  resampled (evaluation/invariance.py, `SetContributions`).

The interval is the bootstrap's central 95 % re-centred on the full-sample difference (`interval`).

With several runs of one setting (a seed sweep), the runs' paired differences give a second
interval, over training randomness rather than test items: Student's t interval of their mean,
each run counted once (`across_runs`).
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

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def draws(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) counts: how often each of the n items is in each bootstrap sample."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    return np.stack([np.bincount(row, minlength=n) for row in picks]).astype(np.float64)


def interval(full: float, spread: np.ndarray, level: float = LEVEL) -> Interval:
    """The central `level` range of the bootstrap differences `spread`, re-centred on the
    full-sample difference. Why re-centred: the invariance score keeps each class's top-K neurons,
    and a draw that repeats transformation sets makes per-class rates noisier, so its top-K mean
    higher; the resampled differences shift away from the full-sample one (seen: an interval that
    excluded its own point estimate). The bootstrap measures the spread; the point is the data's."""
    spread = np.asarray(spread, dtype=np.float64)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(spread - spread.mean(), [tail, 100 - tail]) + full
    return Interval(float(full), float(low), float(high))


def across_runs(differences, level: float = LEVEL) -> Interval | None:
    """t interval of the mean of per-run paired differences (one per run); None under two runs."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    mean = float(d.mean())
    return Interval(mean, mean - half, mean + half)


def paired(metric_a, metric_b, n: int, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
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
