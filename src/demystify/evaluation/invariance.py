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
bootstrap resamples objects, videos or instances rather than sets (docs/science.md, "Verdicts").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SET_SIZE = 3


class InvarianceError(ValueError):
    """The features cannot give a meaningful score; the message says why."""


@dataclass(frozen=True)
class SetContributions:
    """Everything the score needs, kept so that a bootstrap can recompute it on a draw of the
    independent units (an ALOI object, a GOT-10k video, a PASCAL3D+ instance) with multiplicity:
    each image weighs as often as its unit was drawn, and the percentile, the thresholds, the global
    and local rates and the class mean are all computed on the draw; a class the draw left out drops
    out of the class mean (never a zero in its place)."""

    feat: np.ndarray  # (N, D) float32 features of every image
    image_set: np.ndarray  # (N,) index of the image's transformation set, -1: a set under 3 images
    image_class: np.ndarray  # (N,) index of the image's target class
    unit: np.ndarray  # (N,) str, the independent unit of each image
    set_class: np.ndarray  # (S,) index of each set's target class (that of its first image)
    num_classes: int

    @property
    def units(self) -> np.ndarray:
        """The distinct units, sorted: the columns of the weights `scores` takes."""
        return np.unique(self.unit)

    def scores(self, weights: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
        """Score(K) for each row of `weights` (B, U): how often each of `units` is drawn; ones give
        the full-sample score. (B,) per K.

        Each image counts as often as its unit was drawn, and copies of an image are ranked as if
        apart by a hair, so a draw exceeds its thresholds with exactly as many image copies as the
        percentile says (plain value comparisons would drop every copy of the image at a threshold
        and bias the draws down). Only the sorted tails beyond the thresholds are touched."""
        import torch

        impossible = [k for k in ks if not 0 < k <= self.feat.shape[1]]
        if impossible:  # topk would fail deep inside with "selected index k out of range"
            raise InvarianceError(
                f"top-K of {', '.join(map(str, impossible))} neurons asked for, the features have "
                f"{self.feat.shape[1]}"
            )
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float32))
        units = self.units
        if weights.shape[1] != len(units):
            raise InvarianceError(
                f"weights for {weights.shape[1]} units, the sets have {len(units)}"
            )
        image_weight = torch.as_tensor(weights[:, np.searchsorted(units, self.unit)])  # (B, N)
        feat = torch.as_tensor(self.feat, dtype=torch.float32)
        (n, d), s, c, top = feat.shape, len(self.set_class), self.num_classes, max(ks)
        descending = torch.argsort(feat, dim=0, descending=True, stable=True)  # (N, D)
        ascending = torch.flip(descending, dims=[0])
        image_set = torch.as_tensor(
            np.where(self.image_set >= 0, self.image_set, s)
        )  # s: no set (dropped)
        image_class = torch.as_tensor(self.image_class)
        set_class = torch.as_tensor(self.set_class)
        set_images = torch.zeros(s + 1).index_add_(0, image_set, torch.ones(n))[:s]
        class_images = torch.zeros(c).index_add_(0, image_class, torch.ones(n))
        units_of_class = [len(np.unique(self.unit[self.image_class == k])) for k in range(c)]
        own_unit = torch.as_tensor(np.asarray(units_of_class) == 1)
        sets_per_class = torch.zeros(c).index_add_(0, set_class, torch.ones(s))
        out = {k: np.empty(len(weights)) for k in ks}
        start, chunk = 0, 1
        while start < len(weights):
            w = image_weight[start : start + chunk]  # (B, N)
            b = len(w)
            # the draw's classes: a class that is its own unit (an ALOI object) counts once per copy
            # drawn, as a fresh sample would hold that many objects; a label class (a GOT-10k
            # category) once if any of its units was drawn
            per_class = torch.zeros(b, c).index_add_(1, image_class, w) / class_images
            drawn_classes = (
                torch.where(own_unit, per_class, (per_class > 0).float()).sum(1).double()
            )
            p = torch.clamp((1 - 1 / drawn_classes) * 100, max=95.0)  # (B,) the draw's percentile
            total = w.sum(1).double()
            index = torch.floor(
                total * p / 100
            )  # the threshold's rank among the draw's image copies
            at_or_above = (total - index).float()[:, None, None]  # copies >= the upper threshold
            above = at_or_above - 1  # copies > it; by symmetry, also the copies < the lower one
            # the rows beyond each threshold: guessed from the percentile, doubled while some draw's
            # tail reaches deeper (a neuron whose top images belong to undrawn objects)
            tail = min(n, int(n * (100 - float(p.min())) / 100 * 2) + 64)
            up = low = None
            while up is None:
                up = _tail(w, feat, descending, tail, at_or_above, above, image_set, s, upper=True)
                tail = tail if up is not None else min(n, 2 * tail)
            while low is None:
                low = _tail(w, feat, ascending, tail, at_or_above, above, image_set, s, upper=False)
                tail = tail if low is not None else min(n, 2 * tail)
            (fired_up, reached), (fired_low, _) = up, low
            global_rate = reached.double() / total[:, None]  # (B, D)
            size = torch.zeros(b, s + 1).index_add_(1, image_set, w)[:, :s].double()
            rate = torch.maximum(fired_up, fired_low).double() / size.clamp_min(1e-300)[:, :, None]
            set_weight = (
                size / set_images.double()
            )  # (B, S) the set's mean multiplicity; 1 on the full sample
            hit = (rate > 0).double() * set_weight[:, :, None]
            summed = torch.zeros(b, c, d, dtype=torch.float64).index_add_(
                1, set_class, rate * set_weight[:, :, None]
            )
            hits = torch.zeros(b, c, d, dtype=torch.float64).index_add_(1, set_class, hit)
            local = torch.where(hits > 0, summed / hits.clamp_min(1e-300), 0.0)  # (B, C, D)
            # a class weighs its sets' mean multiplicity (a class without any set: 1 with score 0, as
            # in the public code, when the draw has its images); an undrawn class weighs 0
            class_weight = torch.zeros(b, c, dtype=torch.float64).index_add_(
                1, set_class, set_weight
            )
            class_weight = torch.where(
                sets_per_class > 0,
                class_weight / sets_per_class.clamp_min(1),
                (per_class > 0).double(),
            )
            ratio = torch.where(
                global_rate[:, None] > 0, local / global_rate[:, None].clamp_min(1e-300), 0.0
            )
            best = ratio.topk(top, dim=2).values  # the top-K, descending
            for k in ks:
                mean = (best[:, :, :k].mean(2) * class_weight).sum(1) / class_weight.sum(1)
                out[k][start : start + b] = (mean * (100 - p)).numpy()
            start += b
            chunk = max(1, 8_000_000 // (max(tail, s, c) * d))
        return out

    def full(self, ks: tuple[int, ...]) -> dict[int, float]:
        return {k: float(v[0]) for k, v in self.scores(np.ones((1, len(self.units))), ks).items()}

    def save(self, path) -> None:
        from demystify.core.io import write_npz

        write_npz(
            path,
            feat=self.feat.astype(np.float32),
            image_set=self.image_set,
            image_class=self.image_class,
            unit=self.unit.astype(str),
            set_class=self.set_class,
            num_classes=self.num_classes,
        )

    @classmethod
    def load(cls, path) -> SetContributions:
        with np.load(path) as f:
            return cls(
                f["feat"],
                f["image_set"],
                f["image_class"],
                f["unit"],
                f["set_class"],
                int(f["num_classes"]),
            )


def set_contributions(
    feat: np.ndarray,
    instance: np.ndarray,
    classes: np.ndarray | None = None,
    max_k: int = 1,
    unit: np.ndarray | None = None,
) -> SetContributions:
    """The score's inputs, checked. `feat` (N, D), `instance` (N,) set ids, `classes` (N,) targets
    (the set ids when None), `unit` (N,) the independent unit of each image (its set when None)."""
    feat = np.asarray(feat, dtype=np.float32)
    instance = np.asarray(instance)
    classes = instance if classes is None else np.asarray(classes)
    unit = instance.astype(str) if unit is None else np.asarray(unit).astype(str)
    n, d = feat.shape
    if not (len(instance) == len(classes) == len(unit) == n):
        raise InvarianceError(
            f"{n} feature rows but {len(instance)} set ids, {len(classes)} classes and "
            f"{len(unit)} units"
        )
    if max_k > d:
        raise InvarianceError(f"top-K of {max_k} neurons asked for, the features have only {d}")
    unique_classes, image_class = np.unique(classes, return_inverse=True)
    if len(unique_classes) < 2:
        raise InvarianceError(
            f"one target class ({unique_classes.tolist()}): the percentile would be 0"
        )
    image_set = np.full(n, -1)
    set_class = []
    for set_id in np.unique(instance):
        rows = np.flatnonzero(instance == set_id)
        if len(rows) >= MIN_SET_SIZE:
            image_set[rows] = len(set_class)
            set_class.append(image_class[rows[0]])
    if not set_class:
        raise InvarianceError(f"no transformation set has {MIN_SET_SIZE} or more images")
    return SetContributions(
        feat, image_set, image_class.ravel(), unit, np.asarray(set_class), len(unique_classes)
    )


def invariance_scores(
    feat: np.ndarray,
    instance: np.ndarray,
    classes: np.ndarray | None = None,
    ks: tuple[int, ...] = (10, 25),
) -> dict[int, float]:
    """Score(K) for each K. `feat` (N, D), `instance` (N,) set ids, `classes` (N,) targets
    (the set ids when None)."""
    return set_contributions(feat, instance, classes, max(ks)).full(ks)


def _tail(w, feat, order, rows, at_or_above, beyond, image_set, s, upper):
    """Per set and neuron, the weighted count of image copies beyond a threshold, counted from the
    end of `order` (upper: descending, copies above the upper threshold; else ascending, copies
    below the lower one), and per neuron the copies at or beyond it. None when the first `rows`
    rows of `order` do not reach the threshold."""
    import torch

    order = order[:rows]  # (R, D)
    values = torch.gather(feat, 0, order)  # (R, D)
    copies = w[:, order]  # (B, R, D)
    cumulative = torch.cumsum(copies, dim=1)
    if rows < len(feat) and bool((cumulative[:, -1] < at_or_above[:, 0]).any()):
        return None
    position = (cumulative < at_or_above).sum(1, keepdim=True)  # (B, 1, D) the threshold's row
    threshold = torch.gather(values.expand(len(w), -1, -1), 1, position)  # (B, 1, D)
    before = torch.gather(
        cumulative - copies, 1, position
    )  # copies ranked before the threshold row
    own = torch.gather(copies, 1, position)
    is_threshold = torch.arange(rows)[None, :, None] == position
    strictly = values[None] > threshold if upper else values[None] < threshold
    # the threshold row's copies split: those ranked before `beyond` are beyond the threshold, those
    # before `at_or_above` at or beyond it (copies of one image, apart by a hair); other rows by value
    counted = torch.where(
        is_threshold, (beyond - before).clamp(min=0).minimum(own), copies * strictly
    )
    reached = torch.where(
        is_threshold,
        (at_or_above - before).clamp(min=0).minimum(own),
        copies * (strictly | (values[None] == threshold)),
    ).sum(1)
    fired = torch.zeros(len(w), s + 1, feat.shape[1]).scatter_add_(
        1, image_set[order].expand(len(w), -1, -1), counted
    )
    return fired[:, :s], reached
