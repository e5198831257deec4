"""The claims of PAPER.md as explicit comparisons "A beats B on metric M", each with a verdict
computed from the metrics, never written by hand.

A metric is addressed as (kind, set, key): ("invariance", "aloi_view", "top10"),
("classification", "all", "linear_top1"), ("segmentation", "all", "miou"); ("invariance", "mean",
key) is the mean over the invariance sets. Values are lists, one per run (seed); with one run the
verdict compares the difference with a relative margin, with several it also needs the mean
paired difference to exceed twice its standard error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"


@dataclass(frozen=True)
class Comparison:
    claim: int
    what: str  # e.g. "occlusion invariance"
    better: str  # the model expected to score higher
    worse: str
    metric: tuple[str, str, str]


@dataclass
class Outcome:
    comparison: Comparison
    better: list[float]
    worse: list[float]
    verdict: str

    @property
    def difference(self) -> float | None:
        if not self.better or not self.worse:
            return None
        return float(np.mean(self.better) - np.mean(self.worse))

    @property
    def spread(self) -> float | None:
        """Standard deviation of the paired difference across runs (None with one run)."""
        n = min(len(self.better), len(self.worse))
        if n < 2:
            return None
        return float(np.std(np.subtract(self.better[:n], self.worse[:n]), ddof=1))


def comparisons(inv_key: str) -> list[Comparison]:
    inv = lambda s: ("invariance", s, inv_key)  # noqa: E731
    linear, miou = ("classification", "all", "linear_top1"), ("segmentation", "all", "miou")
    out = [
        Comparison(1, "occlusion invariance", "moco_object_centric", "supervised", inv("got10k_occlusion")),
        Comparison(1, "viewpoint invariance", "supervised", "moco_object_centric", inv("aloi_view")),
        Comparison(1, "category-instance invariance", "supervised", "moco_object_centric", inv("pascal3d_instance")),
    ]
    for better in ("moco_object_centric", "moco_scene_crops"):
        for what, metric in (("mean invariance", inv("mean")), ("linear top-1", linear), ("segmentation mIoU", miou)):
            out.append(Comparison(2, what, better, "moco_scenes", metric))
    for better in ("moco_temporal", "moco_tracker"):
        for what, metric in (("viewpoint invariance", inv("aloi_view")), ("illumination invariance", inv("aloi_ill")),
                             ("instance invariance", inv("pascal3d_instance")), ("linear top-1", linear),
                             ("segmentation mIoU", miou)):
            out.append(Comparison(3, what, better, "moco_frames", metric))
    return out


CLAIMS = {
    1: "Instance discrimination (MoCo) is more occlusion-invariant than supervised training, but less "
       "viewpoint- and category-instance-invariant.",
    2: "MoCo gains from object-centric training data over scene-centric data; cropping objects out of "
       "scenes recovers part of the gap.",
    3: "Frame-temporal and region-tracker positives from videos give higher viewpoint / illumination / "
       "instance invariance and better downstream classification and segmentation than MoCo on the same frames.",
}


def value(runs: list[dict], kind: str, model: str, set_name: str, key: str) -> list[float]:
    """The metric in every run where it exists. runs: [{kind: {model: {set: {key: value}}}}]."""
    out = []
    for run in runs:
        per_set = run.get(kind, {}).get(model)
        if not per_set:
            continue
        if set_name == "mean":
            values = [v[key] for v in per_set.values() if isinstance(v, dict) and key in v]
            if values:
                out.append(float(np.mean(values)))
        elif key in per_set.get(set_name, {}):
            out.append(float(per_set[set_name][key]))
    return out


def verdict(better: list[float], worse: list[float], margin: float) -> str:
    if not better or not worse:
        return NOT_MEASURED
    diff = float(np.mean(better) - np.mean(worse))
    scale = max(abs(float(np.mean(worse))), 1e-12)
    noise = 0.0
    n = min(len(better), len(worse))
    if n >= 2:
        noise = 2 * float(np.std(np.subtract(better[:n], worse[:n]), ddof=1)) / np.sqrt(n)
    if abs(diff) <= max(margin * scale, noise):
        return INCONCLUSIVE
    return HOLDS if diff > 0 else FAILS


def judge(runs: list[dict], inv_key: str, margin: float) -> list[Outcome]:
    outcomes = []
    for c in comparisons(inv_key):
        kind, set_name, key = c.metric
        b, w = value(runs, kind, c.better, set_name, key), value(runs, kind, c.worse, set_name, key)
        outcomes.append(Outcome(c, b, w, verdict(b, w, margin)))
    return outcomes


def claim_verdict(outcomes: list[Outcome]) -> str:
    """holds: every comparison holds; does not hold: any fails; inconclusive otherwise;
    not measured: none measured."""
    verdicts = {o.verdict for o in outcomes}
    if verdicts <= {NOT_MEASURED}:
        return NOT_MEASURED
    if FAILS in verdicts:
        return FAILS if HOLDS not in verdicts else "partly holds"
    if verdicts <= {HOLDS}:
        return HOLDS
    return "partly holds" if HOLDS in verdicts else INCONCLUSIVE
