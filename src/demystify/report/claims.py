"""The claims of docs/science.md as explicit comparisons "A beats B on metric M", each with a verdict
computed from the metrics, never written by hand.

A metric is addressed as (kind, set, key): ("invariance", "aloi_view", "top10"),
("classification", "all", "linear_top1"), ("segmentation", "all", "miou"); ("invariance", "mean",
key) is the mean over the invariance sets. Values are lists, one per run (seed), for the tables.

The verdict rests on the 95 % interval of the paired difference (evidence.py: a paired bootstrap
over this run's test images or transformation sets): *holds* when it lies above zero, *does not
hold* when below, *inconclusive* when it contains zero. Before that, the learning gate: a
comparison involving a variant that did not demonstrably learn (its linear or kNN accuracy above
the untrained network's, interval above zero) is *inconclusive*, whatever the numbers. With
several runs (a seed sweep, runs that differ in seeds alone, each counted once) the t interval of
the runs' mean paired difference must also exclude zero on the same side: the bootstrap measures
the test items' sampling, the runs measure training randomness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .intervals import Interval, across_runs

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
    reason: str = ""
    interval: Interval | None = None  # this run's paired difference, better - worse
    runs: Interval | None = None  # over the runs of a seed sweep (None with one run)

    @property
    def difference(self) -> float | None:
        if self.runs is not None:
            return self.runs.difference
        if self.interval is not None:
            return self.interval.difference
        if not self.better or not self.worse:
            return None
        return float(np.mean(self.better) - np.mean(self.worse))


@dataclass
class Gate:
    """Did a trained variant learn? Its accuracy minus the untrained network's, per probe."""
    model: str
    probes: dict[str, Interval | None] = field(default_factory=dict)  # linear_top1, knn_top1

    @property
    def learned(self) -> bool | None:
        measured = [i for i in self.probes.values() if i is not None]
        if not measured:
            return None  # not checked: no untrained reference or no per-image results
        return any(i.low > 0 for i in measured)


GATE_PROBES = ("linear_top1", "knn_top1")


def learning_gate(evidence, trained: list[str], reference: str = "random") -> dict[str, Gate]:
    return {m: Gate(m, {k: evidence.difference(("classification", "all", k), m, reference) for k in GATE_PROBES})
            for m in trained}


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


def _one(run: dict, kind: str, model: str, set_name: str, key: str) -> float | None:
    per_set = run.get(kind, {}).get(model)
    if not per_set:
        return None
    if set_name == "mean":
        values = [v[key] for v in per_set.values() if isinstance(v, dict) and key in v]
        return float(np.mean(values)) if values else None
    return float(per_set[set_name][key]) if key in per_set.get(set_name, {}) else None


def value(runs: list[dict], kind: str, model: str, set_name: str, key: str) -> list[float]:
    """The metric in every run where it exists. runs: [{kind: {model: {set: {key: value}}}}]."""
    return [v for v in (_one(r, kind, model, set_name, key) for r in runs) if v is not None]


def run_differences(runs: list[dict], c: Comparison) -> list[float]:
    """better - worse in every run that has both (paired within each run)."""
    kind, set_name, key = c.metric
    pairs = [(_one(r, kind, c.better, set_name, key), _one(r, kind, c.worse, set_name, key)) for r in runs]
    return [b - w for b, w in pairs if b is not None and w is not None]


def verdict(interval: Interval | None, better: list[float], worse: list[float],
            not_learned: list[str], runs: Interval | None = None) -> tuple[str, str]:
    """(verdict, reason). `runs`: the across-seed interval, when a sweep gives several runs."""
    if interval is None and (not better or not worse):
        return NOT_MEASURED, "a model or set is missing"
    if not_learned:
        return INCONCLUSIVE, f"{', '.join(not_learned)} did not learn"
    if interval is None:
        return INCONCLUSIVE, "no per-item results for an interval"
    if not interval.excludes_zero:
        return INCONCLUSIVE, "the interval contains 0"
    if runs is not None and not (runs.low > 0 if interval.low > 0 else runs.high < 0):
        return INCONCLUSIVE, "the interval over seeds " + ("contains 0" if not runs.excludes_zero else "disagrees")
    return (HOLDS, "") if interval.low > 0 else (FAILS, "")


def judge(runs: list[dict], inv_key: str, evidence, gates: dict[str, Gate], level: float = 0.95) -> list[Outcome]:
    outcomes = []
    for c in comparisons(inv_key):
        kind, set_name, key = c.metric
        b, w = value(runs, kind, c.better, set_name, key), value(runs, kind, c.worse, set_name, key)
        interval = evidence.difference(c.metric, c.better, c.worse) if evidence is not None else None
        not_learned = [m for m in (c.better, c.worse) if m in gates and gates[m].learned is False]
        across = across_runs(run_differences(runs, c), level)
        outcomes.append(Outcome(c, b, w, *verdict(interval, b, w, not_learned, across), interval, across))
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
