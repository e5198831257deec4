"""The stage `evaluate_invariance@MODEL` (`run_stage`): features of every configured set, a feature
file per set (so anyone can recompute the score), each transformation set's contribution to it (for
the report's intervals), and the score at each K in one metrics file.

The paper's invariance score (docs/science.md, "The invariance score"), computed exactly as
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

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from demystify import machine
from demystify.core.config import InvarianceParams
from demystify.core.io import write_json, write_npz
from demystify.evaluation import sets
from demystify.evaluation.features import Loading, Model, default_device, extract

MIN_SET_SIZE = 3


class InvarianceError(ValueError):
    """The features cannot give a meaningful score; the message says why."""


def run_stage(
    model: Model,
    ip: InvarianceParams,
    out_dir: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """`evaluate_invariance@MODEL`: each configured set's features (features/<set>.npz), its
    contributions (contributions/<set>.npz), metrics.json (the score at each K per set) and
    skipped.json (sets and Ks that could not be scored, and why) into out_dir. `device`: None,
    CUDA when present; `workers`: loader processes (None: machine.yaml's invariance.workers)."""
    out_dir = Path(out_dir)
    workers = machine.load().invariance_workers if workers is None else workers
    loading = Loading(device or default_device(), ip.batch_size, workers, progress)
    read, skipped = read_sets(ip)
    net = model.load(loading.device)
    metrics: dict[str, dict] = {}
    skipped_ks: dict[str, dict[str, str]] = {}  # set -> topK -> why that K was not scored there
    cache: dict[tuple, np.ndarray] = {}  # the two PASCAL3D+ sets share their images
    for set_name, (s, size) in read.items():
        key = (tuple(s.paths), tuple(map(str, s.boxes)), size)
        if key not in cache:
            desc = f"invariance@{model.name} {set_name}"
            cache[key] = extract(net, s.paths, s.boxes, size, loading, desc)
        feat = cache[key]
        write_features(out_dir / "features" / f"{set_name}.npz", feat, s)
        ks = _fitting_ks(model.name, set_name, ip.ks, feat.shape[1], skipped_ks)
        try:
            path = out_dir / "contributions" / f"{set_name}.npz"
            metrics[set_name] = _score_set(feat, s, ks, ip, path)
        except InvarianceError as exc:
            skipped[set_name] = str(exc)
            print(
                f"evaluate@{model.name}: invariance set {set_name} skipped: {exc}", file=sys.stderr
            )
    _write_skipped(out_dir / "skipped.json", read, skipped, skipped_ks)
    if not metrics:  # exit 0 with empty metrics would read as a result
        raise InvarianceError(
            "no invariance set could be scored: "
            + "; ".join(f"{n}: {why}" for n, why in skipped.items())
        )
    write_json(out_dir / "metrics.json", metrics)
    summary = ", ".join(f"{k} {v.get('top10')}" for k, v in metrics.items())
    print(f"evaluate_invariance@{model.name}: {summary}")
    return metrics


def read_sets(
    ip: InvarianceParams,
) -> tuple[dict[str, tuple[sets.EvalSet, int]], dict[str, str]]:
    """The configured sets with their input size; whole sets the readers could not use go in `skipped`."""
    wanted = set(ip.sets)
    out: dict[str, tuple[sets.EvalSet, int]] = {}
    for kind in ("view", "ill", "col"):
        if f"aloi_{kind}" in wanted:
            out[f"aloi_{kind}"] = (sets.aloi(ip.aloi, kind), ip.aloi_size)
    if "got10k_occlusion" in wanted:
        out["got10k_occlusion"] = (
            sets.got10k_occlusion(ip.got10k, ip.got10k_seed, ip.got10k_min_span),
            ip.got10k_size,
        )
    if wanted & {"pascal3d_instance", "pascal3d_instance_viewpoint"}:
        for name, s in sets.pascal3d(ip.pascal3d).items():
            if name in wanted:
                out[name] = (s, ip.pascal3d_size)
    skipped = {name: "no images" for name, (s, _) in out.items() if len(s) == 0}
    return {k: v for k, v in out.items() if k not in skipped}, skipped


def write_features(path: Path, feat: np.ndarray, s: sets.EvalSet) -> None:
    """The feature file of docs/data.md: feat (N, D) float32, instance, classes, path."""
    write_npz(
        path,
        feat=feat.astype(np.float32),
        instance=s.instance,
        classes=s.classes.astype(str),
        path=np.asarray(s.paths, dtype=str),
        unit=s.unit.astype(str),
    )


def _write_skipped(
    path: Path,
    read: dict[str, tuple[sets.EvalSet, int]],
    skipped: dict[str, str],
    skipped_ks: dict[str, dict[str, str]],
) -> None:
    """skipped.json: the sets not scored, the Ks not scored per set, and what the readers dropped
    (each with why)."""
    notes = {n: s.skipped for n, (s, _) in read.items() if s.skipped}
    write_json(path, {"sets": skipped, "ks": skipped_ks, "dropped_by_readers": notes})


def _fitting_ks(
    name: str, set_name: str, ks: list[int], width: int, skipped_ks: dict[str, dict[str, str]]
) -> tuple[int, ...]:
    """The Ks within the set's feature width. A K beyond it is skipped, with a note in
    `skipped_ks` and on stderr, for this set alone: the other Ks are still scored (config refuses
    such a K for the configured architectures)."""
    fitting = tuple(k for k in ks if k <= width)
    for k in sorted(set(ks) - set(fitting)):
        skipped_ks.setdefault(set_name, {})[f"top{k}"] = f"K {k} > the {width} feature units"
        print(
            f"evaluate@{name}: invariance set {set_name}: top{k} skipped: K {k} > the {width} "
            "feature units",
            file=sys.stderr,
        )
    return fitting


def _score_set(
    feat: np.ndarray, s: sets.EvalSet, ks: tuple[int, ...], ip: InvarianceParams, path: Path
) -> dict:
    """The set's score at each K in `ks`, its images and transformation sets; its contributions
    (which the report resamples for confidence intervals) into `path`."""
    if not ks:
        raise InvarianceError(
            f"no K of invariance.ks {ip.ks} fits the {feat.shape[1]} feature units"
        )
    contributions = set_contributions(feat, s.instance, s.classes, max(ks), s.unit)
    contributions.save(path)
    scores = contributions.full(ks)
    return {f"top{k}": round(v, 6) for k, v in scores.items()} | {
        "images": len(s),
        "sets": int(len(np.unique(s.instance))),
    }


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
        ranked = _Ranked.of(self)
        out = {k: np.empty(len(weights)) for k in ks}
        start, chunk = 0, 1
        while start < len(weights):
            w = image_weight[start : start + chunk]  # (B, N)
            chunk_scores, tail = _draw_scores(ranked, w, ks)
            for k, v in chunk_scores.items():
                out[k][start : start + len(w)] = v
            start += len(w)
            chunk = max(1, 8_000_000 // (max(tail, ranked.s, ranked.c) * ranked.d))
        return out

    def full(self, ks: tuple[int, ...]) -> dict[int, float]:
        return {k: float(v[0]) for k, v in self.scores(np.ones((1, len(self.units))), ks).items()}

    def save(self, path) -> None:
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


@dataclass(frozen=True)
class _Ranked:
    """What every draw of one `SetContributions.scores` call shares: the features, each neuron's
    order of the images, and the sizes of the sets and classes on the full sample."""

    feat: torch.Tensor  # (N, D) float32
    descending: torch.Tensor  # (N, D) each neuron's images, largest value first
    ascending: torch.Tensor  # (N, D) smallest first
    image_set: torch.Tensor  # (N,) the image's set; s (one past the last): no set (dropped)
    image_class: torch.Tensor  # (N,)
    set_class: torch.Tensor  # (S,)
    set_images: torch.Tensor  # (S,) images per set
    class_images: torch.Tensor  # (C,) images per class
    own_unit: torch.Tensor  # (C,) whether the class is a single unit (an ALOI object)
    sets_per_class: torch.Tensor  # (C,)

    @classmethod
    def of(cls, c: SetContributions) -> _Ranked:
        feat = torch.as_tensor(c.feat, dtype=torch.float32)
        n, s, k = feat.shape[0], len(c.set_class), c.num_classes
        descending = torch.argsort(feat, dim=0, descending=True, stable=True)  # (N, D)
        image_set = torch.as_tensor(np.where(c.image_set >= 0, c.image_set, s))
        image_class = torch.as_tensor(c.image_class)
        set_class = torch.as_tensor(c.set_class)
        units_of_class = [len(np.unique(c.unit[c.image_class == j])) for j in range(k)]
        return cls(
            feat=feat,
            descending=descending,
            ascending=torch.flip(descending, dims=[0]),
            image_set=image_set,
            image_class=image_class,
            set_class=set_class,
            set_images=torch.zeros(s + 1).index_add_(0, image_set, torch.ones(n))[:s],
            class_images=torch.zeros(k).index_add_(0, image_class, torch.ones(n)),
            own_unit=torch.as_tensor(np.asarray(units_of_class) == 1),
            sets_per_class=torch.zeros(k).index_add_(0, set_class, torch.ones(s)),
        )

    @property
    def n(self) -> int:
        return self.feat.shape[0]

    @property
    def d(self) -> int:
        return self.feat.shape[1]

    @property
    def s(self) -> int:
        return len(self.set_class)

    @property
    def c(self) -> int:
        return len(self.class_images)


@dataclass(frozen=True)
class _Draw:
    """Draws of the units, B at a time: the copies of each image, and where the thresholds fall."""

    w: torch.Tensor  # (B, N) copies of each image
    total: torch.Tensor  # (B,) float64, the draw's image copies
    at_or_above: torch.Tensor  # (B, 1, 1) copies >= the upper threshold
    above: torch.Tensor  # copies > it; by symmetry, also the copies < the lower one

    @classmethod
    def of(cls, w: torch.Tensor, p: torch.Tensor) -> _Draw:
        total = w.sum(1).double()
        index = torch.floor(total * p / 100)  # the threshold's rank among the draw's image copies
        at_or_above = (total - index).float()[:, None, None]
        return cls(w, total, at_or_above, at_or_above - 1)


def _draw_scores(
    r: _Ranked, w: torch.Tensor, ks: tuple[int, ...]
) -> tuple[dict[int, np.ndarray], int]:
    """Score(K), (B,) per K, of the draws `w` (B, N), and the rows of the sorted tails it read."""
    b = len(w)
    # the draw's classes: a class that is its own unit (an ALOI object) counts once per copy
    # drawn, as a fresh sample would hold that many objects; a label class (a GOT-10k
    # category) once if any of its units was drawn
    per_class = torch.zeros(b, r.c).index_add_(1, r.image_class, w) / r.class_images
    drawn_classes = torch.where(r.own_unit, per_class, (per_class > 0).float()).sum(1).double()
    p = torch.clamp((1 - 1 / drawn_classes) * 100, max=95.0)  # (B,) the draw's percentile
    draw = _Draw.of(w, p)
    (fired_up, reached), (fired_low, _), tail = _fired(r, draw, p)
    global_rate = reached.double() / draw.total[:, None]  # (B, D)
    size = torch.zeros(b, r.s + 1).index_add_(1, r.image_set, w)[:, : r.s].double()
    rate = torch.maximum(fired_up, fired_low).double() / size.clamp_min(1e-300)[:, :, None]
    set_weight = (
        size / r.set_images.double()
    )  # (B, S) the set's mean multiplicity; 1 on the full sample
    local, class_weight = _class_rates(r, rate, set_weight, per_class)
    ratio = torch.where(
        global_rate[:, None] > 0, local / global_rate[:, None].clamp_min(1e-300), 0.0
    )
    best = ratio.topk(max(ks), dim=2).values  # the top-K, descending
    out = {}
    for k in ks:
        mean = (best[:, :, :k].mean(2) * class_weight).sum(1) / class_weight.sum(1)
        out[k] = (mean * (100 - p)).numpy()
    return out, tail


def _fired(r: _Ranked, draw: _Draw, p: torch.Tensor) -> tuple[tuple, tuple, int]:
    """`_tail` beyond the upper and beyond the lower threshold, and the rows of the sorted tails
    read: guessed from the percentile, doubled while some draw's tail reaches deeper (a neuron
    whose top images belong to undrawn objects)."""
    tail = min(r.n, int(r.n * (100 - float(p.min())) / 100 * 2) + 64)
    up = low = None
    while up is None:
        up = _tail(r, draw, tail, upper=True)
        tail = tail if up is not None else min(r.n, 2 * tail)
    while low is None:
        low = _tail(r, draw, tail, upper=False)
        tail = tail if low is not None else min(r.n, 2 * tail)
    return up, low, tail


def _class_rates(
    r: _Ranked, rate: torch.Tensor, set_weight: torch.Tensor, per_class: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The local firing rate (B, C, D) of each class (the weighted mean over its sets that fire),
    and each class's weight (B, C) in the class mean."""
    b = len(rate)
    hit = (rate > 0).double() * set_weight[:, :, None]
    summed = torch.zeros(b, r.c, r.d, dtype=torch.float64).index_add_(
        1, r.set_class, rate * set_weight[:, :, None]
    )
    hits = torch.zeros(b, r.c, r.d, dtype=torch.float64).index_add_(1, r.set_class, hit)
    local = torch.where(hits > 0, summed / hits.clamp_min(1e-300), 0.0)  # (B, C, D)
    # a class weighs its sets' mean multiplicity (a class without any set: 1 with score 0, as
    # in the public code, when the draw has its images); an undrawn class weighs 0
    class_weight = torch.zeros(b, r.c, dtype=torch.float64).index_add_(1, r.set_class, set_weight)
    class_weight = torch.where(
        r.sets_per_class > 0,
        class_weight / r.sets_per_class.clamp_min(1),
        (per_class > 0).double(),
    )
    return local, class_weight


def _tail(r: _Ranked, draw: _Draw, rows: int, upper: bool):
    """Per set and neuron, the weighted count of image copies beyond a threshold, counted from the
    end of an order (upper: descending, copies above the upper threshold; else ascending, copies
    below the lower one), and per neuron the copies at or beyond it. None when the first `rows`
    rows of the order do not reach the threshold."""
    w, at_or_above, beyond = draw.w, draw.at_or_above, draw.above
    order = (r.descending if upper else r.ascending)[:rows]  # (R, D)
    values = torch.gather(r.feat, 0, order)  # (R, D)
    copies = w[:, order]  # (B, R, D)
    cumulative = torch.cumsum(copies, dim=1)
    if rows < r.n and bool((cumulative[:, -1] < at_or_above[:, 0]).any()):
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
    fired = torch.zeros(len(w), r.s + 1, r.d).scatter_add_(
        1, r.image_set[order].expand(len(w), -1, -1), counted
    )
    return fired[:, : r.s], reached
