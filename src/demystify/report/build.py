"""`report`: report.md with the paper's three tables for this run's data, the claims with computed
verdicts, the plots it shows (copied into the report's folder), reports/headline.json (each claim's
verdict in a few words: `dvc metrics show reports/headline.json`, `make exp-table`) and
reports/metrics.json (every compared difference and its interval, for `dvc metrics diff`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from demystify.core.config import ReportParams, VariantParams
from demystify.core.io import atomic_path, write_json
from demystify.core.methods import METHODS
from demystify.report import claims as cl
from demystify.report.evidence import Evidence

KINDS = ("invariance", "classification", "segmentation")
DOWNSTREAM = (
    ("classification", "linear_top1", "linear top-1"),
    ("classification", "knn_top1", "kNN top-1"),
    ("classification", "svm_map", "SVM mAP"),
    ("segmentation", "miou", "mIoU"),
)


class ReportError(ValueError):
    """A results file is missing; the message names it."""


def load_run(summary_root: str | Path) -> dict:
    """{kind: {model: {set: {key: value}}}} from results/summary/<kind>/metrics.json."""
    run = {}
    for kind in KINDS:
        path = Path(summary_root) / kind / "metrics.json"
        if not path.is_file():
            raise ReportError(f"{path}: not found (run summarize@{kind})")
        run[kind] = json.loads(path.read_text())
    return run


def load_sweep(path: str | Path | None) -> list[dict]:
    """Extra runs (e.g. seeds of a `dvc exp` sweep) from a CSV of run, kind, model, set, metric, value."""
    if not path or not Path(path).is_file():
        return []
    table = pd.read_csv(path)
    runs = []
    for _, group in table.groupby("run", sort=True):
        run: dict = {}
        for r in group.itertuples():
            run.setdefault(r.kind, {}).setdefault(r.model, {}).setdefault(r.set, {})[r.metric] = (
                float(r.value)
            )
        runs.append(run)
    return runs


def same_run(run: dict, current: dict) -> bool:
    """A sweep run whose every metric equals the current run's is the current run (its experiment,
    or the baseline it was applied from): outputs are deterministic, so equal means the same."""
    values = [
        (k, m, s, key, v)
        for k, per_model in run.items()
        for m, per_set in per_model.items()
        for s, per_key in per_set.items()
        for key, v in per_key.items()
    ]
    return bool(values) and all(
        abs(current.get(k, {}).get(m, {}).get(s, {}).get(key, float("nan")) - v) <= 1e-9
        for k, m, s, key, v in values
    )


def _fmt(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    text = f"{np.mean(values):.{digits}f}"
    return text + (f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _inv_sets(runs: list[dict]) -> list[str]:
    sets: dict[str, None] = {}
    for run in runs:
        for per_set in run["invariance"].values():
            sets.update(dict.fromkeys(per_set))
    return list(sets)


def invariance_table(
    runs: list[dict], models: list[str], key: str, at_ceiling: dict | None = None
) -> str:
    at_ceiling = at_ceiling or {}
    rows = [
        [s + (" (at ceiling)" if s in at_ceiling else "")]
        + [_fmt(cl.value(runs, "invariance", m, s, key), 1) for m in models]
        for s in _inv_sets(runs)
    ]
    return _table(["set \\ model", *models], rows)


def comparison_table(runs: list[dict], models: list[str], key: str) -> str:
    sets = _inv_sets(runs)
    header = ["model", *[f"{s} inv." for s in sets], *[label for _, _, label in DOWNSTREAM]]
    rows = []
    for m in models:
        row = [m] + [_fmt(cl.value(runs, "invariance", m, s, key), 1) for s in sets]
        row += [_fmt(cl.value(runs, kind, m, "all", k), 3) for kind, k, _ in DOWNSTREAM]
        rows.append(row)
    return _table(header, rows)


def _ci(i) -> str:
    return "-" if i is None else f"{i.difference:+.3f} [{i.low:+.3f}, {i.high:+.3f}]"


def _p(o: cl.Outcome) -> str:
    return "-" if o.p_holm is None else f"{o.p_holm:.3g}"


def _reading(o: cl.Outcome) -> str:
    if o.interval is None:
        return o.reason or o.verdict
    i = o.interval
    return (
        "interval above 0"
        if i.low > 0
        else "interval below 0"
        if i.high < 0
        else "interval contains 0"
    )


CLAIM_HEADER = (
    "comparison",
    "expected",
    "higher side",
    "lower side",
    "difference [{level:.0%} CI]",
)


def _claim_part(
    claim: int, outcomes: list[cl.Outcome], verdict: str, levels: dict, level: float
) -> str:
    """One claim's heading, text and table of primary comparisons, then its context table."""
    weight, reasons = levels[claim]
    header = [h.format(level=level) for h in CLAIM_HEADER]
    rows, context = [], []
    for o in outcomes:
        c = o.comparison
        row = [
            c.what,
            f"{c.better} > {c.worse}",
            _fmt(o.better, 3),
            _fmt(o.worse, 3),
            _ci(o.interval),
        ]
        if c.primary:
            decided = f"**{o.verdict}**" + (f": {o.reason}" if o.reason else "")
            rows.append(row + [_ci(o.runs), _p(o), decided])
        else:
            context.append(row + [_reading(o)])
    why = "" if weight == cl.OF_RECORD else " *Indicative*: " + "; ".join(reasons) + "."
    part = f"### Claim {claim}: {verdict} ({weight})\n\n{cl.CLAIMS[claim]}{why}\n\n"
    part += _table([*header, f"over sweep runs [{level:.0%} CI]", "Holm p", "verdict"], rows)
    if context:
        part += (
            "\n\nContext, each side against the untrained network (decides nothing):\n\n"
            + _table([*header, "reading"], context)
        )
    return part


def _decision_rule(level: float, n_runs: int) -> str:
    return (
        f"Each comparison's difference comes with a {level:.0%} confidence interval from a paired bootstrap over "
        "this run's independent test units (classification: object instances; ALOI: objects, its three sets drawn "
        "jointly; GOT-10k: videos; PASCAL3D+: instances; segmentation: images) and, where a variant was pretrained "
        "with several seeds, over its seeds first. A claim's primary comparisons are tested together with Holm's "
        f"correction at {1 - level:.0%}: a significant one *holds* when the difference is above 0 and *does not "
        "hold* when below; the rest are *inconclusive*, and so is any comparison about a variant that did not pass "
        "the learning gate or on a set at ceiling"
        + (
            f"; with the {n_runs} runs of a seed sweep, the t interval of their mean difference must also exclude 0 "
            "on the same side"
            if n_runs > 1
            else ""
        )
        + ". *Not measured*: a model or set is missing. A claim's "
        "line counts its primary comparisons; context comparisons decide nothing."
    )


def claims_section(
    outcomes: list[cl.Outcome], n_runs: int, level: float, levels: dict
) -> tuple[str, dict]:
    """The decision rule, then each claim with its verdict and tables; and {claim: verdict}."""
    parts, verdicts = [], {}
    for claim in cl.CLAIMS:
        mine = [o for o in outcomes if o.comparison.claim == claim]
        verdicts[claim] = cl.claim_verdict(mine)
        parts.append(_claim_part(claim, mine, verdicts[claim], levels, level))
    return _decision_rule(level, n_runs) + "\n\n" + "\n\n".join(parts), verdicts


def opening_section(levels: dict, p: ReportParams) -> str:
    """The weight of this report's verdicts, first, in words."""
    rule = (
        f"A claim is *of record* when every variant it is about passes the learning gate, its kNN top-1 closes at "
        f"least {p.record_gap_share:.0%} of the gap between the untrained and the supervised network, and it was "
        f"pretrained with at least {p.record_seeds} seeds; otherwise its verdict is *indicative*: the same words, "
        "never the same weight."
    )
    if all(w == cl.OF_RECORD for w, _ in levels.values()):
        return "**Every claim's verdict is of record.** " + rule
    reasons = list(dict.fromkeys(r for _, rs in levels.values() for r in rs))
    return (
        "**Indicative verdicts** ("
        + ", ".join(f"claim {c}: {w}" for c, (w, _) in levels.items())
        + "). "
        + rule
        + " Here:\n\n"
        + "\n".join(f"- {r}" for r in reasons)
    )


def scope_section(
    outcomes: list[cl.Outcome],
    gates: dict[str, cl.Gate],
    level: float,
    at_ceiling: dict[str, float],
    ceiling: float,
) -> str:
    """What this run can and cannot show, from its own gate and intervals."""
    lines = []
    learned = [m for m, g in gates.items() if g.learned]
    failed = [m for m, g in gates.items() if g.learned is False]
    if gates:
        lines.append(
            f"- {len(learned)} of {len(gates)} trained variants learned (the gate below)"
            + (
                f"; {', '.join(failed)} did not, so every comparison about them is inconclusive whatever its "
                "numbers."
                if failed
                else "."
            )
        )
    if at_ceiling:
        lines.append(
            "- At ceiling (the untrained network already scores "
            + f"{ceiling:g} or more), flagged in Table 1 "
            "and left out of every mean: "
            + ", ".join(f"{s} ({v:.1f})" for s, v in at_ceiling.items())
            + "."
        )
    if any(g.seeds == 1 for g in gates.values()):
        lines.append(
            "- Variants pretrained with one seed: their intervals cover the test items only, not the "
            "variation between pretraining runs (add seed replicates, docs/howto.md)."
        )
    lines += _resolution(outcomes, level)
    lines.append(
        "- The data are a synthetic world standing in for ImageNet, COCO and the paper's video sets: a verdict "
        "says what the methods do on this world at this budget, not on the real data sets "
        "(configure those paths and a larger scale to test that)."
    )
    return "\n".join(lines)


def _resolution(outcomes: list[cl.Outcome], level: float) -> list[str]:
    """Per kind of metric, the median half-width of its intervals: smaller differences are noise."""
    lines = []
    for label, kind in (
        ("classification accuracy", "classification"),
        ("segmentation mIoU", "segmentation"),
        ("invariance score", "invariance"),
    ):
        widths = [
            (o.interval.high - o.interval.low) / 2
            for o in outcomes
            if o.interval is not None and o.comparison.metric[0] == kind
        ]
        if widths:
            lines.append(
                f"- Differences in {label} smaller than about ±{np.median(widths):.3g} (the median half-width "
                f"of its {level:.0%} intervals here) are below what this run's test units resolve."
            )
    return lines


def _share(g: cl.Gate, probe: str) -> str:
    v = g.gap_share.get(probe)
    return "-" if v is None else f"{v:.0%}"


def gate_section(gates: dict[str, cl.Gate], runs: list[dict], level: float, margin: float) -> str:
    if not gates:
        return "No trained variant to check."
    rows = []
    for m, g in gates.items():
        learned = {True: "yes", False: "**no**", None: "not checked"}[g.learned]
        rows.append(
            [
                m,
                str(g.seeds),
                _fmt(cl.value(runs[:1], "classification", m, "all", "linear_top1"), 3),
                _ci(g.probes.get("linear_top1")),
                _share(g, "linear_top1"),
                _fmt(cl.value(runs[:1], "classification", m, "all", "knn_top1"), 3),
                _ci(g.probes.get("knn_top1")),
                _share(g, "knn_top1"),
                learned,
            ]
        )
    return (
        f"A trained variant *learned* when both its linear and its kNN top-1 on the held-out classification split "
        f"are at least {margin:.2f} above the untrained network's (`random`), each with the {level:.0%} interval of "
        "the paired difference above 0. A comparison about a variant that did not learn is inconclusive. Gap "
        "share: the part of the distance from the untrained to the supervised network that the variant closes.\n\n"
        + _table(
            [
                "model",
                "seeds",
                "linear top-1",
                f"minus untrained [{level:.0%} CI]",
                "linear gap share",
                "kNN top-1",
                f"minus untrained [{level:.0%} CI]",
                "kNN gap share",
                "learned",
            ],
            rows,
        )
    )


def invariance_gain_table(
    evidence, runs: list[dict], models: list[str], key: str, reference: str = "random"
) -> str:
    rows = [
        [s] + [_ci(evidence.difference(("invariance", s, key), m, reference)) for m in models]
        for s in _inv_sets(runs)
    ]
    return _table(["set \\ model", *models], rows)


def verdicts_in_brief(outcomes: list[cl.Outcome], levels: dict) -> dict:
    """reports/headline.json: per claim the counts of its primary comparisons' verdicts that are not 0
    ("1 holds, 3 inconclusive"), and how many claims are of record: short enough for one row per
    experiment in `dvc exp show` (make exp-table). No key repeats one of metrics.json, so `dvc exp
    show` names each column by its key alone."""
    out: dict = {}
    for claim in cl.CLAIMS:
        tally = cl.tally([o for o in outcomes if o.comparison.claim == claim])
        out[f"claim{claim}"] = (
            ", ".join(f"{n} {verdict}" for verdict, n in tally.items() if n) or cl.NOT_MEASURED
        )
    out["claims_of_record"] = sum(w == cl.OF_RECORD for w, _ in levels.values())
    return out


def headline(
    outcomes: list[cl.Outcome],
    verdicts: dict,
    levels: dict,
    runs: list[dict],
    gates: dict[str, cl.Gate],
) -> dict:
    out: dict = {"runs": len(runs)}
    for claim in cl.CLAIMS:
        mine = [o for o in outcomes if o.comparison.claim == claim]
        for verdict, n in cl.tally(mine).items():
            out[f"claim{claim}.{verdict.replace(' ', '_')}"] = n
        out[f"claim{claim}.of_record"] = int(levels[claim][0] == cl.OF_RECORD)
    for o in outcomes:
        c = o.comparison
        name = f"claim{c.claim}.{c.better}_vs_{c.worse}.{c.metric[1]}.{c.metric[2]}"
        if o.difference is not None:
            out[name] = round(o.difference, 6)
        if o.interval is not None:
            out[f"{name}.low"], out[f"{name}.high"] = (
                round(o.interval.low, 6),
                round(o.interval.high, 6),
            )
        if o.p_holm is not None:
            out[f"{name}.p_holm"] = round(o.p_holm, 6)
        if o.runs is not None:
            out[f"{name}.seeds_low"], out[f"{name}.seeds_high"] = (
                round(o.runs.low, 6),
                round(o.runs.high, 6),
            )
    for m, g in gates.items():
        out[f"gate.{m}.learned"] = {True: 1.0, False: 0.0, None: -1.0}[g.learned]  # -1: not checked
        for probe, i in g.probes.items():
            if i is not None:
                out[f"gate.{m}.{probe}_minus_untrained"] = round(i.difference, 6)
                out[f"gate.{m}.{probe}_minus_untrained.low"] = round(i.low, 6)
                out[f"gate.{m}.{probe}_minus_untrained.high"] = round(i.high, 6)
            if g.gap_share.get(probe) is not None:
                out[f"gate.{m}.{probe}_gap_share"] = round(g.gap_share[probe], 6)
    return out


@dataclass(frozen=True)
class ReportPaths:
    """What the report reads: the summaries (results/summary), the pretraining results, the per-item
    results' root and a sweep's runs (none: this run alone); where it writes: its folder, and
    report.md (default: in that folder; it links its figures as if beside them)."""

    summary: str | Path
    pretrain: str | Path
    results: str | Path
    out_dir: str | Path
    sweep: str | Path | None = None
    markdown: str | Path | None = None


@dataclass(frozen=True)
class Roster:
    """The variants of params.yaml the report lists, in its order, seed replicates excluded
    (`replicates` maps a model to itself and its replicates); `trained`: those the learning gate
    checks against the untrained network."""

    models: list[str]
    trained: list[str] = field(default_factory=list)
    replicates: dict[str, list[str]] | None = None

    @property
    def order(self) -> list[str]:
        """The tables' rows: params order, the untrained network (every comparison's reference) last."""
        return [m for m in self.models if m != cl.UNTRAINED] + [
            m for m in self.models if m == cl.UNTRAINED
        ]


@dataclass(frozen=True)
class Findings:
    """What the report says, computed once: the runs (this one first, then a sweep's others), the
    invariance sets at ceiling, the per-item evidence, the learning gate, every comparison's
    outcome and each claim's weight."""

    runs: list[dict]
    inv_key: str
    at_ceiling: dict[str, float]
    evidence: Evidence
    gates: dict[str, cl.Gate]
    outcomes: list[cl.Outcome]
    levels: dict


def findings(paths: ReportPaths, roster: Roster, params: ReportParams) -> Findings:
    """Read the runs, check the learning gate and judge every claim."""
    inv_key = f"top{params.invariance_k}"
    current = load_run(paths.summary)
    runs = [current, *(r for r in load_sweep(paths.sweep) if not same_run(r, current))]
    at_ceiling = cl.ceiling_sets(runs, inv_key, params.ceiling)
    evidence = Evidence(
        paths.results,
        params.resamples,
        params.level,
        replicates=roster.replicates,
        ceiling_sets=tuple(at_ceiling),
    )
    trained = [m for m in roster.trained if m in roster.models]
    gates = (
        cl.learning_gate(evidence, trained, margin=params.gate_margin)
        if cl.UNTRAINED in roster.models
        else {}
    )
    outcomes = cl.judge(runs, inv_key, evidence, gates, params.level, at_ceiling)
    levels = {
        claim: cl.claim_level(
            [o for o in outcomes if o.comparison.claim == claim],
            gates,
            params.record_gap_share,
            params.record_seeds,
        )
        for claim in cl.CLAIMS
    }
    return Findings(runs, inv_key, at_ceiling, evidence, gates, outcomes, levels)


def claim_rows(f: Findings, order: list[str], claim: int) -> list[str]:
    """The variants a claim's primary comparisons set against each other, in the tables' order."""
    compared = {
        m
        for o in f.outcomes
        if o.comparison.claim == claim and o.comparison.primary
        for m in (o.comparison.better, o.comparison.worse)
    }
    return [m for m in order if m in compared]


def copy_pictures(summary_root: str | Path, out_dir: Path) -> list[str]:
    """The summaries' figures copied beside the report, as its markdown links to them."""
    pictures = []
    for kind in KINDS:
        src = Path(summary_root) / kind / f"{kind}.png"
        if src.is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(out_dir / src.name) as tmp:
                shutil.copyfile(src, tmp)
            pictures.append(f"![{kind}]({src.name})")
    return pictures


def pretrain_section(pretrain_root: str | Path, order: list[str]) -> str:
    """Each trained variant's budget, from results/pretrain/MODEL/summary.json."""
    rows = []
    for m in order:
        path = Path(pretrain_root) / m / "summary.json"
        if path.is_file():
            s = json.loads(path.read_text())
            rows.append(
                [
                    m,
                    str(s.get("steps")),
                    str(s.get("samples_seen", "-")),
                    str(s.get("corpus_items", "-")),
                    str(s.get("passes", "-")),
                    "-" if s.get("final_loss") is None else f"{s['final_loss']:.3f}",
                    "-" if s.get("knn_top1") is None else f"{s['knn_top1']:.3f}",
                ]
            )
    header = [
        "model",
        "steps",
        "samples seen",
        "unique items",
        "passes",
        "final loss",
        "kNN monitor top-1",
    ]
    return (
        "## Pretraining\n\nEvery trained variant gets the same budget in optimizer steps (`pretrain.steps`), whatever the "
        "size of its corpus; samples seen = steps x global batch (pairs of views for MoCo), unique items = the corpus "
        "(images, or pairs for the video variants), passes = their ratio.\n\n"
        + _table(header, rows)
    )


def opening(f: Findings, params: ReportParams) -> list[str]:
    """The title, the weight of the verdicts, how the numbers were computed, and the run's scope."""
    n = len(f.runs)
    return [
        "# Demystifying contrastive SSL: this run's results",
        opening_section(f.levels, params),
        f"Computed by `dvc repro` from this run's metrics ({n} run{'s' if n > 1 else ''}; "
        f"values are mean ± standard deviation over runs where there are several). Invariance scores are "
        f"the paper's measure at {f.inv_key.replace('top', 'top-')} neurons (docs/science.md); higher is more invariant.",
        "## What this run can and cannot show\n\n"
        + scope_section(f.outcomes, f.gates, params.level, f.at_ceiling, params.ceiling),
    ]


def tables(f: Findings, order: list[str], params: ReportParams) -> list[str]:
    """Tables 1 to 3 (claims 2 and 3's variants in 2 and 3) and every model's downstream scores."""
    runs, key = f.runs, f.inv_key
    gains = [m for m in order if m != cl.UNTRAINED]
    return [
        "## Table 1: invariances (sets x models)\n\n"
        + invariance_table(runs, order, key, f.at_ceiling),
        f"Each score minus the untrained network's, with its {params.level:.0%} interval (bootstrap over the sets' "
        "independent units):\n\n" + invariance_gain_table(f.evidence, runs, gains, key),
        "## Table 2: dataset bias (object-centric vs scenes vs scene crops)\n\n"
        + comparison_table(runs, claim_rows(f, order, 2), key),
        "## Table 3: the video method (MoCo on frames vs frame-temporal vs region-tracker, and single tracked "
        "crops)\n\n" + comparison_table(runs, claim_rows(f, order, 3), key),
        "## Downstream, every model\n\n" + comparison_table(runs, order, key),
    ]


def build(paths: ReportPaths, roster: Roster, params: ReportParams) -> dict:
    """report.md, its figures, metrics.json and headline.json; the tables list `roster.order`.
    Returns each claim's verdict and weight, and the metrics."""
    out_dir = Path(paths.out_dir)
    f = findings(paths, roster, params)
    claims_md, verdicts = claims_section(f.outcomes, len(f.runs), params.level, f.levels)
    pictures = copy_pictures(paths.summary, out_dir)
    sections = [
        *opening(f, params),
        "## Claims\n\n" + claims_md,
        "## Learning gate\n\n" + gate_section(f.gates, f.runs, params.level, params.gate_margin),
        *tables(f, roster.order, params),
        pretrain_section(paths.pretrain, roster.order),
        "## Plots\n\n" + "\n\n".join(pictures),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(paths.markdown) if paths.markdown else out_dir / "report.md") as tmp:
        Path(tmp).write_text("\n\n".join(sections) + "\n")
    metrics = headline(f.outcomes, verdicts, f.levels, f.runs, f.gates)
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "headline.json", verdicts_in_brief(f.outcomes, f.levels))
    return {
        "verdicts": verdicts,
        "levels": {c: w for c, (w, _) in f.levels.items()},
        "metrics": metrics,
    }


def replicate_groups(variants: dict[str, VariantParams]) -> dict[str, list[str]]:
    """Each variant that others replicate (another pretraining seed) -> itself and its replicates."""
    groups: dict[str, list[str]] = {}
    for name, v in variants.items():
        base = getattr(v, "replicate_of", None)
        if base:
            groups.setdefault(base, [base]).append(name)
    return groups


def run_stage(
    *,
    paths: ReportPaths,
    params: ReportParams,
    ks: list[int],
    variants: dict[str, VariantParams],
) -> dict:
    """The `report` stage: the variants of params.yaml, in its order; the learning gate checks every
    trained variant against `random`."""
    if params.invariance_k not in ks:
        raise ReportError(
            f"report.invariance_k = {params.invariance_k} is not one of invariance.ks {ks}"
        )
    groups = replicate_groups(variants)
    replicas = {r for members in groups.values() for r in members[1:]}
    models = [m for m in variants if m not in replicas]
    trained = [m for m in models if METHODS[variants[m].method].trains]
    return build(
        paths,
        Roster(models, trained, groups),
        params,
    )
