"""The paper's invariance score (docs/science.md, "The invariance score"), computed exactly as
the public measurement code does, quirks included:

- percentile P = min((1 - 1/C) * 100, 95) over the C distinct target classes;
- per neuron, threshold t = the value at index floor(N * P / 100) of the ascending sort, and a
  negative threshold s = the value at that index of the descending sort;
- the global firing rate uses `>=` t, the local one `>` t (or `<` s, whichever count is larger,
  chosen per set and neuron); sets under 3 images are skipped; a set belongs to the class of its
  first image; classes with no contributing set count as 0 in the class mean;
- Score(K) = mean over classes of the top-K mean of L_y(i) / G(i), times (100 - P).

For confidence intervals the terms are kept per independent unit (`SetContributions`), so a
bootstrap resamples objects, videos or instances rather than sets (docs/science.md, "Intervals").
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
    """What each transformation set adds to the score, under the global thresholds of all images,
    kept per (set, unit) group so that a bootstrap can resample the independent unit (an ALOI
    object, a GOT-10k video, a PASCAL3D+ instance) with multiplicity: a draw weights each group by
    how often its unit was drawn, recomputes the sets' firing rates, the classes' local rates and
    the class mean from those weights, and leaves out what it did not draw (never a zero in its
    place). The thresholds, the global rate and the percentile stay those of the full sample."""

    set_class: np.ndarray  # (S,) index of the set's target class
    group_set: np.ndarray  # (G,) which set a group of images belongs to
    group_unit: np.ndarray  # (G,) str, the independent unit of the group's images
    group_count: np.ndarray  # (G,) images in the group
    group_up: np.ndarray  # (G, D) images of the group above the upper threshold, per neuron
    group_low: np.ndarray  # (G, D) images below the lower threshold
    global_rate: np.ndarray  # (D,)
    num_classes: int
    percentile: float

    @property
    def units(self) -> np.ndarray:
        """The distinct units, sorted: the columns of the weights `scores` takes."""
        return np.unique(self.group_unit)

    def scores(self, weights: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
        """Score(K) for each row of `weights` (B, U): how often each of `units` is drawn; ones give
        the full-sample score. (B,) per K. In torch, float64: its multi-threaded top-K is what
        makes thousands of bootstrap draws cheap."""
        import torch

        weights = torch.as_tensor(np.atleast_2d(np.asarray(weights, dtype=np.float64)))
        units = self.units
        if weights.shape[1] != len(units):
            raise InvarianceError(f"weights for {weights.shape[1]} units, the sets have {len(units)}")
        unit_of_group = torch.as_tensor(np.searchsorted(units, self.group_unit))
        group_set = torch.as_tensor(self.group_set)
        set_class = torch.as_tensor(self.set_class)
        up = torch.as_tensor(self.group_up, dtype=torch.float64)
        low = torch.as_tensor(self.group_low, dtype=torch.float64)
        count = torch.as_tensor(self.group_count, dtype=torch.float64)
        global_rate = torch.as_tensor(self.global_rate, dtype=torch.float64)
        s, c, (g, d), top = len(self.set_class), self.num_classes, up.shape, max(ks)
        set_images = torch.zeros(s, dtype=torch.float64).index_add_(0, group_set, count)
        sets_per_class = torch.zeros(c, dtype=torch.float64).index_add_(0, set_class, torch.ones(s, dtype=torch.float64))
        chunk = max(1, 20_000_000 // (max(g, s, c) * d))  # bounded memory for many sets or draws
        out = {k: np.empty(len(weights)) for k in ks}
        for start in range(0, len(weights), chunk):
            w = weights[start : start + chunk][:, unit_of_group]  # (B, G) each group's multiplicity
            b = len(w)
            # (B, S, D): each set's weighted firing counts, above and below; its weighted size
            fired_up = torch.zeros(b, s, d, dtype=torch.float64).index_add_(1, group_set, w[:, :, None] * up)
            fired_low = torch.zeros(b, s, d, dtype=torch.float64).index_add_(1, group_set, w[:, :, None] * low)
            size = torch.zeros(b, s, dtype=torch.float64).index_add_(1, group_set, w * count)
            rate = torch.maximum(fired_up, fired_low) / size.clamp_min(1e-300)[:, :, None]
            set_weight = size / set_images  # (B, S) the set's mean multiplicity; 1 on the full sample
            hit = (rate > 0).double() * set_weight[:, :, None]
            total = torch.zeros(b, c, d, dtype=torch.float64).index_add_(1, set_class, rate * set_weight[:, :, None])
            hits = torch.zeros(b, c, d, dtype=torch.float64).index_add_(1, set_class, hit)
            local = torch.where(hits > 0, total / hits.clamp_min(1e-300), 0.0)  # (B, C, D)
            # a class's weight: its sets' mean multiplicity (a class without any set: 1, score 0,
            # as in the public code); an undrawn class weighs 0 and drops out of the mean
            class_weight = torch.zeros(b, c, dtype=torch.float64).index_add_(1, set_class, set_weight)
            class_weight = torch.where(sets_per_class > 0, class_weight / sets_per_class.clamp_min(1), 1.0)
            best = (local / global_rate).topk(top, dim=2).values  # the top-K, descending
            for k in ks:
                per_class = best[:, :, :k].mean(2)
                mean = (per_class * class_weight).sum(1) / class_weight.sum(1)
                out[k][start : start + chunk] = (mean * (100 - self.percentile)).numpy()
        return out

    def full(self, ks: tuple[int, ...]) -> dict[int, float]:
        return {k: float(v[0]) for k, v in self.scores(np.ones((1, len(self.units))), ks).items()}

    def save(self, path) -> None:
        from ..io import write_npz

        write_npz(path, set_class=self.set_class, group_set=self.group_set, group_unit=self.group_unit.astype(str),
                  group_count=self.group_count, group_up=self.group_up, group_low=self.group_low,
                  global_rate=self.global_rate, num_classes=self.num_classes, percentile=self.percentile)

    @classmethod
    def load(cls, path) -> SetContributions:
        with np.load(path) as f:
            return cls(f["set_class"], f["group_set"], f["group_unit"], f["group_count"], f["group_up"], f["group_low"],
                       f["global_rate"], int(f["num_classes"]), float(f["percentile"]))


def set_contributions(feat: np.ndarray, instance: np.ndarray, classes: np.ndarray | None = None,
                      max_k: int = 1, unit: np.ndarray | None = None) -> SetContributions:
    """The per-set terms of the score. `feat` (N, D), `instance` (N,) set ids, `classes` (N,)
    targets (the set ids when None), `unit` (N,) the independent unit of each image (the set
    when None: each set resampled whole)."""
    feat = np.asarray(feat, dtype=np.float64)
    instance = np.asarray(instance)
    classes = instance if classes is None else np.asarray(classes)
    unit = instance.astype(str) if unit is None else np.asarray(unit).astype(str)
    n, d = feat.shape
    if not (len(instance) == len(classes) == len(unit) == n):
        raise InvarianceError(f"{n} feature rows but {len(instance)} set ids, {len(classes)} classes and "
                              f"{len(unit)} units")
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
    set_class, group_set, group_unit, group_count, group_up, group_low = [], [], [], [], [], []
    for set_id in np.unique(instance):
        rows = np.flatnonzero(instance == set_id)
        if len(rows) < MIN_SET_SIZE:
            continue
        for u in np.unique(unit[rows]):
            mine = rows[unit[rows] == u]
            group_set.append(len(set_class))
            group_unit.append(u)
            group_count.append(len(mine))
            group_up.append((feat[mine] > upper).sum(0))
            group_low.append((feat[mine] < lower).sum(0))
        set_class.append(np.searchsorted(unique_classes, classes[rows[0]]))
    if not set_class:
        raise InvarianceError(f"no transformation set has {MIN_SET_SIZE} or more images")
    return SetContributions(np.asarray(set_class), np.asarray(group_set), np.asarray(group_unit, dtype=str),
                            np.asarray(group_count), np.stack(group_up).astype(np.int32),
                            np.stack(group_low).astype(np.int32), global_rate, len(unique_classes), p)


def invariance_scores(feat: np.ndarray, instance: np.ndarray, classes: np.ndarray | None = None,
                      ks: tuple[int, ...] = (10, 25)) -> dict[int, float]:
    """Score(K) for each K. `feat` (N, D), `instance` (N,) set ids, `classes` (N,) targets
    (the set ids when None)."""
    return set_contributions(feat, instance, classes, max(ks)).full(ks)
