"""The paper's invariance score (../shared/PAPER.md, "The invariance score"), computed exactly as
the public measurement code does, quirks included:

- percentile P = min((1 - 1/C) * 100, 95) over the C distinct target classes;
- per neuron, threshold t = the value at index floor(N * P / 100) of the ascending sort, and a
  negative threshold s = the value at that index of the descending sort;
- the global firing rate uses `>=` t, the local one `>` t (or `<` s, whichever count is larger,
  chosen per set and neuron); sets under 3 images are skipped; a set belongs to the class of its
  first image; classes with no contributing set count as 0 in the class mean;
- Score(K) = mean over classes of the top-K mean of L_y(i) / G(i), times (100 - P).
"""

from __future__ import annotations

import numpy as np

MIN_SET_SIZE = 3


class InvarianceError(ValueError):
    """The features cannot give a meaningful score; the message says why."""


def percentile(num_classes: int) -> float:
    return min((1.0 - 1.0 / num_classes) * 100, 95)


def invariance_scores(feat: np.ndarray, instance: np.ndarray, classes: np.ndarray | None = None,
                      ks: tuple[int, ...] = (10, 25)) -> dict[int, float]:
    """Score(K) for each K. `feat` (N, D), `instance` (N,) set ids, `classes` (N,) targets
    (the set ids when None)."""
    feat = np.asarray(feat, dtype=np.float64)
    instance = np.asarray(instance)
    classes = instance if classes is None else np.asarray(classes)
    n, d = feat.shape
    if not (len(instance) == len(classes) == n):
        raise InvarianceError(f"{n} feature rows but {len(instance)} set ids and {len(classes)} classes")
    if max(ks) > d:
        raise InvarianceError(f"top-K of {max(ks)} neurons asked for, the features have only {d}")
    unique_classes = np.unique(classes)
    if len(unique_classes) < 2:
        raise InvarianceError(f"one target class ({unique_classes.tolist()}): the percentile would be 0")
    p = percentile(len(unique_classes))
    index = int((n * p) // 100)
    upper = np.sort(feat, axis=0)[index]
    lower = -np.sort(-feat, axis=0)[index]
    global_rate = np.mean(feat >= upper, axis=0)

    local_sum = np.zeros((len(unique_classes), d))
    local_count = np.zeros((len(unique_classes), d))
    sets = 0
    for set_id in np.unique(instance):
        rows = np.flatnonzero(instance == set_id)
        if len(rows) < MIN_SET_SIZE:
            continue
        sets += 1
        y = np.searchsorted(unique_classes, classes[rows[0]])
        fired = np.maximum((feat[rows] > upper).sum(0), (feat[rows] < lower).sum(0))
        hit = fired > 0
        local_sum[y, hit] += fired[hit] / len(rows)
        local_count[y, hit] += 1
    if sets == 0:
        raise InvarianceError(f"no transformation set has {MIN_SET_SIZE} or more images")
    local_rate = np.divide(local_sum, local_count, out=np.zeros_like(local_sum), where=local_count > 0)
    ratios = -np.sort(-(local_rate / global_rate), axis=1)
    return {k: float(ratios[:, :k].mean(axis=1).mean() * (100 - p)) for k in ks}
