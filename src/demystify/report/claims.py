"""The claims of docs/science.md as explicit comparisons "A beats B on metric M", each with a verdict
computed from the metrics, never written by hand (docs/science.md, "Verdicts").

A metric is addressed as (kind, set, key): ("invariance", "aloi_view", "top10"),
("classification", "all", "linear_top1"), ("segmentation", "all", "miou"); ("invariance", "mean",
key) is the mean over the invariance sets not at ceiling. Values are lists, one per run (seed), for
the tables.

How a claim is decided:
1. The learning gate: a trained variant *learned* when both its linear and its kNN top-1 are at
   least `gate_margin` above the untrained network's with the interval above 0. Only the variant a
   comparison is about (`about`) must pass; a comparison about one that did not is inconclusive.
2. Each claim declares its primary comparisons; their bootstrap p-values are corrected with Holm's
   step-down method within the claim, at 1 - level. A rejected comparison *holds* (difference above
   0) or *does not hold* (below); the rest are *inconclusive*. Context comparisons (each side
   against the untrained network) are shown with their intervals and decide nothing.
3. The claim reads "k hold / m fail / n inconclusive" over its primaries.
4. Its weight: *of record* only when every variant it is about learned, closes at least
   `record_gap_share` of the untrained-to-supervised kNN gap and has at least `record_seeds`
   pretraining seeds; otherwise *indicative*, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from demystify.report.intervals import Interval, across_runs

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED, CONTEXT = (
    "holds",
    "does not hold",
    "inconclusive",
    "not measured",
    "context",
)
OF_RECORD, INDICATIVE = "of record", "indicative"

LINEAR, KNN = ("classification", "all", "linear_top1"), ("classification", "all", "knn_top1")
MIOU = ("segmentation", "all", "miou")
GATE_PROBES = ("linear_top1", "knn_top1")
UNTRAINED, SUPERVISED = "random", "supervised"


@dataclass(frozen=True)
class Comparison:
    claim: int
    what: str  # e.g. "occlusion invariance"
    better: str  # the model expected to score higher
    worse: str
    metric: tuple[str, str, str]
    about: tuple[
        str, ...
    ] = ()  # the variants whose representation it judges: these must pass the gate
    primary: bool = True  # decides the claim; False: context, shown with its interval only


@dataclass
class Outcome:
    comparison: Comparison
    better: list[float]
    worse: list[float]
    verdict: str
    reason: str = ""
    interval: Interval | None = None  # this run's paired difference, better - worse
    runs: Interval | None = None  # over the runs of a seed sweep (None with one run)
    p_holm: float | None = None  # Holm-adjusted p-value within the claim (primaries only)

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
    """Did a trained variant learn? Its accuracy minus the untrained network's, per probe, and the
    share of the untrained-to-supervised gap it closes."""

    model: str
    probes: dict[str, Interval | None] = field(default_factory=dict)  # linear_top1, knn_top1
    gap_share: dict[str, float | None] = field(default_factory=dict)
    margin: float = 0.05
    seeds: int = 1

    @property
    def learned(self) -> bool | None:
        """Both probes at least `margin` above the untrained network, intervals above 0."""
        if not self.probes or any(i is None for i in self.probes.values()):
            return None  # not checked: no untrained reference or no per-image results
        return all(i.difference >= self.margin and i.low > 0 for i in self.probes.values())

    def why_not(self) -> str:
        parts = []
        for probe, i in self.probes.items():
            if i is not None and not (i.difference >= self.margin and i.low > 0):
                parts.append(
                    f"{probe.removesuffix('_top1')} {i.difference:+.3f} [{i.low:+.3f}, {i.high:+.3f}]"
                )
        return ", ".join(parts)


def learning_gate(
    evidence,
    trained: list[str],
    reference: str = UNTRAINED,
    margin: float = 0.05,
    supervised: str = SUPERVISED,
) -> dict[str, Gate]:
    gates = {}
    for m in trained:
        probes = {
            k: evidence.difference(("classification", "all", k), m, reference) for k in GATE_PROBES
        }
        share = {}
        for k in GATE_PROBES:
            gap = evidence.difference(("classification", "all", k), supervised, reference)
            share[k] = (
                None
                if probes[k] is None or gap is None or gap.difference <= 0
                else probes[k].difference / gap.difference
            )
        gates[m] = Gate(m, probes, share, margin, len(evidence.seeds_of(m)))
    return gates


def _claim1(inv) -> list[Comparison]:
    """MoCo against supervised training, each also against the untrained network (context)."""
    moco = "moco_object_centric"
    out = [
        Comparison(
            1, "occlusion invariance", moco, SUPERVISED, inv("got10k_occlusion"), (moco, SUPERVISED)
        ),
        Comparison(
            1, "viewpoint invariance", SUPERVISED, moco, inv("aloi_view"), (moco, SUPERVISED)
        ),
        Comparison(
            1,
            "category-instance invariance",
            SUPERVISED,
            moco,
            inv("pascal3d_instance"),
            (moco, SUPERVISED),
        ),
        # MoCo's occlusion invariance must be its own gain, not supervised training's loss
        Comparison(1, "occlusion invariance", moco, UNTRAINED, inv("got10k_occlusion"), (moco,)),
    ]
    for what, s in (
        ("viewpoint invariance", "aloi_view"),
        ("category-instance invariance", "pascal3d_instance"),
    ):
        out.append(Comparison(1, what, moco, UNTRAINED, inv(s), (moco,), primary=False))
    for what, s in (
        ("occlusion invariance", "got10k_occlusion"),
        ("viewpoint invariance", "aloi_view"),
        ("category-instance invariance", "pascal3d_instance"),
    ):
        out.append(Comparison(1, what, SUPERVISED, UNTRAINED, inv(s), (SUPERVISED,), primary=False))
    return out


def _claim2(inv) -> list[Comparison]:
    """Object-centric data and scene crops against whole scenes."""
    return [
        Comparison(2, what, better, "moco_scenes", metric, (better,))
        for better in ("moco_object_centric", "moco_scene_crops")
        for what, metric in (
            ("mean invariance", inv("mean")),
            ("linear top-1", LINEAR),
            ("segmentation mIoU", MIOU),
        )
    ]


def _claim3(inv) -> list[Comparison]:
    """Temporal and tracker positives against MoCo on the same frames; tracked pairs against
    single tracked crops."""
    video_metrics = (
        ("viewpoint invariance", inv("aloi_view")),
        ("illumination invariance", inv("aloi_ill")),
        ("instance invariance", inv("pascal3d_instance")),
        ("linear top-1", LINEAR),
        ("segmentation mIoU", MIOU),
    )
    out = [
        Comparison(3, what, better, "moco_frames", metric, (better,))
        for better in ("moco_temporal", "moco_tracker")
        for what, metric in video_metrics
    ]
    # the control: tracked pairs against single tracked crops, so time is the only difference
    for what, metric in video_metrics:
        out.append(
            Comparison(3, what, "moco_tracker", "moco_tracker_crops", metric, ("moco_tracker",))
        )
    return out


def comparisons(inv_key: str) -> list[Comparison]:
    """Every claim's comparisons, in claim order; invariance at `inv_key` ("top10")."""
    inv = lambda s: ("invariance", s, inv_key)  # noqa: E731
    return _claim1(inv) + _claim2(inv) + _claim3(inv)


CLAIMS = {
    1: "Instance discrimination (MoCo) is more occlusion-invariant than supervised training, but less "
    "viewpoint- and category-instance-invariant.",
    2: "MoCo gains from object-centric training data over scene-centric data; cropping objects out of "
    "scenes recovers part of the gap.",
    3: "Frame-temporal and region-tracker positives from videos give higher viewpoint / illumination / "
    "instance invariance and better downstream classification and segmentation than MoCo on the same frames, "
    "and tracked pairs beat single tracked crops (time, not cropping).",
}


def _one(
    run: dict, kind: str, model: str, set_name: str, key: str, skip: tuple[str, ...] = ()
) -> float | None:
    per_set = run.get(kind, {}).get(model)
    if not per_set:
        return None
    if set_name == "mean":
        values = [
            v[key] for s, v in per_set.items() if isinstance(v, dict) and key in v and s not in skip
        ]
        return float(np.mean(values)) if values else None
    return float(per_set[set_name][key]) if key in per_set.get(set_name, {}) else None


def value(
    runs: list[dict], kind: str, model: str, set_name: str, key: str, skip: tuple[str, ...] = ()
) -> list[float]:
    """The metric in every run where it exists. runs: [{kind: {model: {set: {key: value}}}}]."""
    return [v for v in (_one(r, kind, model, set_name, key, skip) for r in runs) if v is not None]


def run_differences(runs: list[dict], c: Comparison, skip: tuple[str, ...] = ()) -> list[float]:
    """better - worse in every run that has both (paired within each run)."""
    kind, set_name, key = c.metric
    pairs = [
        (_one(r, kind, c.better, set_name, key, skip), _one(r, kind, c.worse, set_name, key, skip))
        for r in runs
    ]
    return [b - w for b, w in pairs if b is not None and w is not None]


def ceiling_sets(
    runs: list[dict], inv_key: str, ceiling: float, reference: str = UNTRAINED
) -> dict[str, float]:
    """Invariance sets on which the untrained network already scores `ceiling` or more: nothing is
    left to gain there, so they are flagged and left out of means. {set: untrained score}."""
    per_set = runs[0].get("invariance", {}).get(reference, {}) if runs else {}
    return {
        s: float(v[inv_key])
        for s, v in per_set.items()
        if isinstance(v, dict) and inv_key in v and float(v[inv_key]) >= ceiling
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()


def _blocked(c: Comparison, gates: dict[str, Gate], at_ceiling: dict[str, float]) -> str:
    """Why a comparison cannot be decided before its numbers are looked at ("" when it can)."""
    if c.metric[0] == "invariance" and c.metric[1] in at_ceiling:
        return f"{c.metric[1]} is at ceiling (untrained {at_ceiling[c.metric[1]]:.1f})"
    failed = [m for m in c.about if m in gates and gates[m].learned is False]
    return f"{', '.join(failed)} did not learn" if failed else ""


def _side_note(c: Comparison, gates: dict[str, Gate]) -> str:
    others = [
        m
        for m in (c.better, c.worse)
        if m not in c.about and m in gates and gates[m].learned is False
    ]
    return f"{', '.join(others)} did not learn at this budget" if others else ""


def judge(
    runs: list[dict],
    inv_key: str,
    evidence,
    gates: dict[str, Gate],
    level: float = 0.95,
    at_ceiling: dict[str, float] | None = None,
) -> list[Outcome]:
    at_ceiling = at_ceiling or {}
    skip = tuple(at_ceiling)
    outcomes = []
    for c in comparisons(inv_key):
        kind, set_name, key = c.metric
        b = value(runs, kind, c.better, set_name, key, skip)
        w = value(runs, kind, c.worse, set_name, key, skip)
        interval = (
            evidence.difference(c.metric, c.better, c.worse) if evidence is not None else None
        )
        across = across_runs(run_differences(runs, c, skip), level)
        o = Outcome(c, b, w, INCONCLUSIVE, interval=interval, runs=across)
        if interval is None and (not b or not w):
            o.verdict, o.reason = NOT_MEASURED, "a model or set is missing"
        elif not c.primary:
            o.verdict = CONTEXT
        elif blocked := _blocked(c, gates, at_ceiling):
            o.reason = blocked
        elif interval is None:
            o.reason = "no per-item results for an interval"
        outcomes.append(o)
    for claim in CLAIMS:
        _decide(
            [
                o
                for o in outcomes
                if o.comparison.claim == claim
                and o.comparison.primary
                and o.verdict == INCONCLUSIVE
                and not o.reason
            ],
            1 - level,
            gates,
        )
    return outcomes


def _decide(tested: list[Outcome], alpha: float, gates: dict[str, Gate]) -> None:
    """Holm's correction over a claim's testable primaries, then the sign; a seed sweep's t
    interval must agree."""
    if not tested:
        return
    for o, p in zip(tested, holm([o.interval.p for o in tested]), strict=True):
        o.p_holm = p
        if p > alpha:
            o.reason = f"not significant after Holm's correction (p = {p:.3g})"
        elif o.runs is not None and not (
            o.runs.low > 0 if o.interval.difference > 0 else o.runs.high < 0
        ):
            o.reason = "the interval over seeds " + (
                "contains 0" if not o.runs.excludes_zero else "disagrees"
            )
        else:
            o.verdict = HOLDS if o.interval.difference > 0 else FAILS
        note = _side_note(o.comparison, gates)
        o.reason = "; ".join(r for r in (o.reason, note) if r)


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    """How many primary comparisons hold, fail, are inconclusive, or were not measured."""
    primary = [o.verdict for o in outcomes if o.comparison.primary]
    return {v: primary.count(v) for v in (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)}


def claim_verdict(outcomes: list[Outcome]) -> str:
    """ "k hold / m fail / n inconclusive" over the claim's primary comparisons."""
    t = tally(outcomes)
    if t[HOLDS] + t[FAILS] + t[INCONCLUSIVE] == 0:
        return NOT_MEASURED
    text = f"{t[HOLDS]} hold / {t[FAILS]} fail / {t[INCONCLUSIVE]} inconclusive"
    return text + (f" / {t[NOT_MEASURED]} not measured" if t[NOT_MEASURED] else "")


def claim_level(
    outcomes: list[Outcome], gates: dict[str, Gate], record_share: float, record_seeds: int
) -> tuple[str, list[str]]:
    """(OF_RECORD or INDICATIVE, the reasons): of record when every variant the claim is about
    learned, closes at least `record_share` of the kNN gap and has `record_seeds` seeds."""
    about = sorted(
        {m for o in outcomes if o.comparison.primary for m in o.comparison.about if m in gates}
    )
    reasons = []
    for m in about:
        g, why = gates[m], []
        share = g.gap_share.get("knn_top1")
        if g.learned is not True:
            why.append(
                "did not pass the learning gate"
                if g.learned is False
                else "was not checked by the gate"
            )
        if m != SUPERVISED and (share is None or share < record_share):
            why.append(
                f"closes {share:.0%} of the kNN gap to supervised (< {record_share:.0%})"
                if share is not None
                else "has no measurable kNN gap share (supervised no better than untrained)"
            )
        if g.seeds < record_seeds:
            why.append(
                f"has {g.seeds} pretraining seed{'s' if g.seeds > 1 else ''} (< {record_seeds})"
                + (", so its intervals cover test items only" if g.seeds == 1 else "")
            )
        if why:
            reasons.append(f"{m} " + "; ".join(why))
    if not about:
        reasons.append("no variant of the claim was checked by the learning gate")
    return (INDICATIVE if reasons else OF_RECORD), reasons
