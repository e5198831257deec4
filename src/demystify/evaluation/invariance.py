"""The paper's invariance score (docs/science.md, "The invariance score"), computed exactly as
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

from dataclasses import dataclass

import numpy as np

MIN_SET_SIZE = 3


class InvarianceError(ValueError):
    """The features cannot give a meaningful score; the message says why."""


def percentile(num_classes: int) -> float:
    return min((1.0 - 1.0 / num_classes) * 100, 95)


@dataclass(frozen=True)
class SetContributions:
    """What each transformation set adds to the score, under the global thresholds of all images:
    its class and, per neuron, the share of its images the neuron fires on (0: never). Weighting
    the sets (a bootstrap draw) recomputes the score without touching the features again."""

    set_class: np.ndarray  # (S,) index of the set's target class
    rate: np.ndarray  # (S, D) local firing rate of each neuron in each set
    global_rate: np.ndarray  # (D,)
    num_classes: int
    percentile: float

    def scores(self, weights: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
        """Score(K) for each row of `weights` (B, S), how often each set counts: (B,) per K.
        In torch, float64: its multi-threaded top-K is what makes thousands of bootstrap draws cheap."""
        import torch

        weights = torch.as_tensor(np.atleast_2d(np.asarray(weights, dtype=np.float64)))
        rate = torch.as_tensor(self.rate, dtype=torch.float64)
        hit, global_rate = (rate > 0).double(), torch.as_tensor(self.global_rate, dtype=torch.float64)
        set_class = torch.as_tensor(self.set_class)
        d, top = rate.shape[1], max(ks)
        chunk = max(1, 20_000_000 // (self.num_classes * d))  # bounded memory for many classes or draws
        out = {k: np.empty(len(weights)) for k in ks}
        for start in range(0, len(weights), chunk):
            w = weights[start : start + chunk]
            # (B, classes, D): local over global firing rate, per class and neuron
            local = torch.zeros(len(w), self.num_classes, d, dtype=torch.float64)
            for y in range(self.num_classes):
                mine = set_class == y
                if mine.any():
                    total, count = w[:, mine] @ rate[mine], w[:, mine] @ hit[mine]
                    local[:, y] = torch.where(count > 0, total / count.clamp_min(1e-300), 0.0)
            best = (local / global_rate).topk(top, dim=2).values  # the top-K, descending
            for k in ks:
                out[k][start : start + chunk] = (best[:, :, :k].mean(2).mean(1) * (100 - self.percentile)).numpy()
        return out

    def save(self, path) -> None:
        from ..io import write_npz

        write_npz(path, set_class=self.set_class, rate=self.rate, global_rate=self.global_rate,
                  num_classes=self.num_classes, percentile=self.percentile)

    @classmethod
    def load(cls, path) -> SetContributions:
        with np.load(path) as f:
            return cls(f["set_class"], f["rate"], f["global_rate"], int(f["num_classes"]), float(f["percentile"]))


def set_contributions(feat: np.ndarray, instance: np.ndarray, classes: np.ndarray | None = None,
                      max_k: int = 1) -> SetContributions:
    """The per-set terms of the score. `feat` (N, D), `instance` (N,) set ids, `classes` (N,)
    targets (the set ids when None)."""
    feat = np.asarray(feat, dtype=np.float64)
    instance = np.asarray(instance)
    classes = instance if classes is None else np.asarray(classes)
    n, d = feat.shape
    if not (len(instance) == len(classes) == n):
        raise InvarianceError(f"{n} feature rows but {len(instance)} set ids and {len(classes)} classes")
    if max_k > d:
        raise InvarianceError(f"top-K of {max_k} neurons asked for, the features have only {d}")
    unique_classes = np.unique(classes)
    if len(unique_classes) < 2:
        raise InvarianceError(f"one target class ({unique_classes.tolist()}): the percentile would be 0")
    p = percentile(len(unique_classes))
    index = int((n * p) // 100)
    upper = np.sort(feat, axis=0)[index]
    lower = -np.sort(-feat, axis=0)[index]
    global_rate = np.mean(feat >= upper, axis=0)
    set_class, rate = [], []
    for set_id in np.unique(instance):
        rows = np.flatnonzero(instance == set_id)
        if len(rows) < MIN_SET_SIZE:
            continue
        set_class.append(np.searchsorted(unique_classes, classes[rows[0]]))
        fired = np.maximum((feat[rows] > upper).sum(0), (feat[rows] < lower).sum(0))
        rate.append(fired / len(rows))
    if not set_class:
        raise InvarianceError(f"no transformation set has {MIN_SET_SIZE} or more images")
    return SetContributions(np.asarray(set_class), np.stack(rate), global_rate, len(unique_classes), p)


def invariance_scores(feat: np.ndarray, instance: np.ndarray, classes: np.ndarray | None = None,
                      ks: tuple[int, ...] = (10, 25)) -> dict[int, float]:
    """Score(K) for each K. `feat` (N, D), `instance` (N,) set ids, `classes` (N,) targets
    (the set ids when None)."""
    contributions = set_contributions(feat, instance, classes, max(ks))
    return {k: float(v[0]) for k, v in contributions.scores(np.ones(len(contributions.set_class)), ks).items()}
