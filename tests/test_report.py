"""The report: verdicts computed from metrics (one run and several), the tables, the headline
metrics, and the sweep table read from `dvc exp show` rows."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from evaluation_files import write_predictions

from demystify.core.config import INVARIANCE_SETS, ReportParams
from demystify.core.io import write_json
from demystify.evaluation.invariance import SetContributions, set_contributions
from demystify.report import build as build_module
from demystify.report import claims as cl
from demystify.report import intervals
from demystify.report.build import ReportError, ReportPaths, Roster, build
from demystify.report.evidence import Evidence
from demystify.tools.sweep import Run, pool, rows_of

MODELS = [
    "random",
    "supervised",
    "moco_object_centric",
    "moco_scenes",
    "moco_scene_crops",
    "moco_frames",
    "moco_temporal",
    "moco_tracker",
    "moco_tracker_crops",
]
SETS = list(INVARIANCE_SETS)  # the paper's six


def _run(inv=None, linear=None, miou=None):
    """A run where every model scores 10 / 0.5 / 0.3 unless overridden: {model: value}."""
    inv, linear, miou = inv or {}, linear or {}, miou or {}
    return {
        "invariance": {
            m: {s: {"top10": inv.get((m, s), inv.get(m, 10.0)), "top25": 5.0} for s in SETS}
            for m in MODELS
        },
        "classification": {
            m: {"all": {"linear_top1": linear.get(m, 0.5), "knn_top1": 0.4, "svm_map": 0.6}}
            for m in MODELS
        },
        "segmentation": {
            m: {"all": {"miou": miou.get(m, 0.3), "pixel_accuracy": 0.8}} for m in MODELS
        },
    }


RNG = np.random.default_rng(0)
TEST_IMAGES = 300
TRUTH = RNG.integers(0, 10, TEST_IMAGES)
LUCK = RNG.random(TEST_IMAGES)  # shared by every model: paired, like one test set scored twice
SET_CLASS = np.repeat(np.arange(10), 5)  # 50 transformation sets of 10 classes
BASE_RATE = RNG.uniform(0.05, 0.6, (50, 64))
CONFUSION = RNG.integers(50, 100, (40, 3, 3))
IMAGES_PER_SET = 10


def _contributions(invariance: float) -> SetContributions:
    """50 transformation sets of 10 classes, each set its own unit, whose images scatter around
    their set's centre less the more `invariance` (the same centres and noise for every model)."""
    rng = np.random.default_rng(7)
    centre = rng.normal(size=(50, 64))
    noise = rng.normal(size=(50, IMAGES_PER_SET, 64))
    feat = (centre[:, None] + noise * 1.5 / invariance).reshape(-1, 64)
    sets = np.repeat(np.arange(50), IMAGES_PER_SET)
    return set_contributions(feat, sets, SET_CLASS[sets], 25, np.array([f"set:{i}" for i in sets]))


def _params(**changes) -> ReportParams:
    base = dict(
        invariance_k=10,
        resamples=500,
        level=0.95,
        sweep="runs.csv",
        gate_margin=0.05,
        record_gap_share=0.4,
        record_seeds=3,
        ceiling=90.0,
    )
    return ReportParams(**{**base, **changes})


def _paths(root, sweep=None) -> ReportPaths:
    return ReportPaths(
        summary=root / "summary",
        pretrain=root / "pretrain",
        results=root / "results",
        out_dir=root / "reports",
        sweep=sweep,
    )


def _write_results(
    root, model: str, accuracy: float = 0.5, invariance: float = 1.0, segmentation: float = 1.0
):
    """Real per-item files for one model, as the evaluation stages write them: predictions that are
    right on the test images whose shared `LUCK` is below `accuracy`, transformation sets whose
    firing rates scale with `invariance`, confusions whose diagonal scales with `segmentation`."""
    wrong = (TRUTH + 1) % 10
    pred = np.where(LUCK < accuracy, TRUTH, wrong)
    instances = [f"instance:{i // 3}" for i in range(TEST_IMAGES)]  # three images per instance
    write_predictions(root, model, TRUTH, pred, instances)
    confusion = CONFUSION.copy()
    confusion[:, np.arange(3), np.arange(3)] = (
        confusion[:, np.arange(3), np.arange(3)] * segmentation
    ).astype(int)
    (root / "segmentation" / model).mkdir(parents=True, exist_ok=True)
    paths = np.array([f"img{i}.png" for i in range(40)])
    np.savez(root / "segmentation" / model / "per_image.npz", path=paths, confusion=confusion)
    for s in SETS:
        c = _contributions(invariance)
        (root / "invariance" / model / "contributions").mkdir(parents=True, exist_ok=True)
        c.save(root / "invariance" / model / "contributions" / f"{s}.npz")


def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate():
    """Two classifiers with true accuracies 0.70 and 0.62 on fresh test sets of 300 images: the 95 %
    interval of the paired difference covers the true 0.08 in about 95 % of the data sets."""
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for t in range(trials):
        u = rng.random(300)  # correlated like two real models: both right on the easy images
        a, b = u < 0.70, u < 0.62
        noise = rng.random(300) < 0.2  # and some images where they disagree at random
        a = np.where(noise, rng.random(300) < 0.70, a)
        b = np.where(noise, rng.random(300) < 0.62, b)
        i = intervals.paired(
            intervals.accuracy(a), intervals.accuracy(b), 300, resamples=500, seed=t
        )
        covered += i.low <= 0.08 <= i.high
    assert 0.88 <= covered / trials <= 0.99
    big = intervals.paired(
        intervals.accuracy(LUCK < 0.8), intervals.accuracy(LUCK < 0.4), TEST_IMAGES
    )
    assert big.excludes_zero and big.low > 0.3
    same = intervals.paired(
        intervals.accuracy(LUCK < 0.5), intervals.accuracy(LUCK < 0.5), TEST_IMAGES
    )
    assert not same.excludes_zero


def test_interval_over_seeds_covers_the_true_mean_at_about_the_nominal_rate():
    """Three seeds whose paired differences scatter around a true 0.05: the t interval covers it in
    about 95 % of sweeps; one run gives no interval; a large steady difference excludes 0."""
    rng = np.random.default_rng(4)
    found = [intervals.across_runs(rng.normal(0.05, 0.03, size=3)) for _ in range(2000)]
    coverage = np.mean([i.low <= 0.05 <= i.high for i in found])
    assert 0.93 <= coverage <= 0.97
    assert intervals.across_runs([0.1]) is None
    assert intervals.across_runs([0.30, 0.32, 0.29]).low > 0.2


def test_interval_is_centred_on_the_full_sample_difference():
    """A resampled statistic biased away from the full-sample value (as the invariance score's
    top-K selection is) still gives an interval around the data's own difference."""
    spread = np.random.default_rng(3).normal(
        loc=2.0, scale=0.5, size=4000
    )  # bootstrap shifted by +2
    i = intervals.interval(-1.0, spread)
    assert i.low < -1.0 < i.high and i.high - i.low == pytest.approx(2 * 1.96 * 0.5, rel=0.05)


def test_resampled_metrics_agree_with_the_reported_ones():
    """With every item drawn once, the bootstrap's metric functions give the stages' numbers."""
    from demystify.evaluation import segmentation
    from demystify.evaluation.invariance import invariance_scores, set_contributions

    rng = np.random.default_rng(2)
    feat, instance = rng.normal(size=(120, 32)), np.repeat(np.arange(30), 4)
    classes = instance % 6
    c = set_contributions(feat, instance, classes, 25)
    full = c.scores(np.ones((1, 30)), (10, 25))
    expected = invariance_scores(feat, instance, classes, (10, 25))
    assert full[10][0] == pytest.approx(expected[10], rel=1e-12) and full[25][0] == pytest.approx(
        expected[25], rel=1e-12
    )
    miou = intervals.mean_iou(CONFUSION)(np.ones((1, 40)))[0]
    assert miou == pytest.approx(segmentation.scores(CONFUSION.sum(0))["miou"], rel=1e-12)


def test_holm_and_the_claim_line():
    assert cl.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert cl.holm([0.2]) == [0.2]
    outcomes = [
        cl.Outcome(cl.Comparison(1, "x", "a", "b", LINEAR_METRIC), [], [], v)
        for v in (cl.HOLDS, cl.FAILS, cl.INCONCLUSIVE, cl.INCONCLUSIVE)
    ]
    outcomes.append(
        cl.Outcome(
            cl.Comparison(1, "x", "a", "random", LINEAR_METRIC, primary=False), [], [], cl.CONTEXT
        )
    )
    assert cl.claim_verdict(outcomes) == "1 hold / 1 fail / 2 inconclusive"
    assert (
        cl.claim_verdict(
            [cl.Outcome(cl.Comparison(1, "x", "a", "b", LINEAR_METRIC), [], [], cl.NOT_MEASURED)]
        )
        == cl.NOT_MEASURED
    )


LINEAR_METRIC = ("classification", "all", "linear_top1")


def test_learning_gate_flips_with_the_data(tmp_path):
    _write_results(tmp_path, "random", accuracy=0.30)
    _write_results(tmp_path, "supervised", accuracy=0.70)
    _write_results(tmp_path, "moco_scenes", accuracy=0.30)  # no better than untrained
    gates = cl.learning_gate(Evidence(tmp_path), ["supervised", "moco_scenes", "moco_frames"])
    assert gates["supervised"].learned is True and gates["moco_scenes"].learned is False
    assert gates["moco_frames"].learned is None  # no results: not checked
    _write_results(tmp_path, "moco_scenes", accuracy=0.60)  # the same variant, now learned
    gate = cl.learning_gate(Evidence(tmp_path), ["moco_scenes"])["moco_scenes"]
    assert gate.learned is True and gate.gap_share["linear_top1"] == pytest.approx(0.75, abs=0.05)
    # above the untrained network, significantly, but by less than the margin: not learned
    _write_results(tmp_path, "moco_scenes", accuracy=0.33)
    gate = cl.learning_gate(Evidence(tmp_path), ["moco_scenes"], margin=0.05)["moco_scenes"]
    assert gate.probes["linear_top1"].low > 0 and gate.learned is False
    assert (
        cl.learning_gate(Evidence(tmp_path), ["moco_scenes"], margin=0.02)["moco_scenes"].learned
        is True
    )


def test_gate_needs_both_probes(tmp_path):
    """Linear AND kNN: a variant that learned on one probe alone did not learn."""
    _write_results(tmp_path, "random", accuracy=0.30)
    _write_results(tmp_path, "supervised", accuracy=0.70)
    _write_results(tmp_path, "moco_tracker", accuracy=0.60)
    with np.load(tmp_path / "classification" / "moco_tracker" / "per_image.npz") as f:
        files = dict(f)
    with np.load(tmp_path / "classification" / "random" / "per_image.npz") as f:
        files["knn"] = f["knn"]  # the kNN probe no better than untrained
    np.savez(tmp_path / "classification" / "moco_tracker" / "per_image.npz", **files)
    gate = cl.learning_gate(Evidence(tmp_path), ["moco_tracker"])["moco_tracker"]
    assert gate.probes["linear_top1"].low > 0.05 and gate.probes["knn_top1"].difference == 0
    assert gate.learned is False and "knn" in gate.why_not()


@pytest.mark.e2e  # the whole report built: make test only
def test_claims_follow_the_metrics(tmp_path):
    for m in MODELS:
        _write_results(tmp_path, m, accuracy=0.3 if m == "random" else 0.6)
    for s in ("aloi_view", "pascal3d_instance"):  # supervised more viewpoint / instance invariant
        _contributions(1.5).save(
            tmp_path / "invariance" / "supervised" / "contributions" / f"{s}.npz"
        )
    _contributions(1.5).save(
        tmp_path / "invariance" / "moco_object_centric" / "contributions" / "got10k_occlusion.npz"
    )
    evidence = Evidence(tmp_path, resamples=500)
    gates = cl.learning_gate(evidence, [m for m in MODELS if m != "random"])
    outcomes = cl.judge([_run()], "top10", evidence, gates)
    claim1 = [o for o in outcomes if o.comparison.claim == 1 and o.comparison.primary]
    assert [o.verdict for o in claim1] == [cl.HOLDS] * 4 and all(o.interval.low > 0 for o in claim1)
    assert all(o.p_holm is not None and o.p_holm <= 0.05 for o in claim1)
    assert (
        cl.claim_verdict([o for o in outcomes if o.comparison.claim == 1])
        == "4 hold / 0 fail / 0 inconclusive"
    )
    # equal models: every other comparison is inconclusive
    assert {o.verdict for o in outcomes if o.comparison.claim == 3} == {cl.INCONCLUSIVE}
    # one seed and a kNN gap share of 100 %: indicative, and says why
    level, reasons = cl.claim_level(claim1, gates, 0.4, 3)
    assert level == cl.INDICATIVE and any("1 pretraining seed" in r for r in reasons)
    assert cl.claim_level(claim1, gates, 0.4, 1) == (cl.OF_RECORD, [])
    # a variant that did not learn makes the comparisons about it inconclusive, whatever the numbers;
    # one on the other side is only noted
    _write_results(tmp_path, "moco_tracker", accuracy=0.3, invariance=2.0)
    _write_results(tmp_path, "moco_frames", accuracy=0.3, invariance=0.5)
    evidence = Evidence(tmp_path, resamples=500)
    gates = cl.learning_gate(evidence, [m for m in MODELS if m != "random"])
    claim3 = [o for o in cl.judge([_run()], "top10", evidence, gates) if o.comparison.claim == 3]
    tracker = [o for o in claim3 if o.comparison.better == "moco_tracker"]
    assert {(o.verdict, o.reason) for o in tracker} == {
        (cl.INCONCLUSIVE, "moco_tracker did not learn")
    }
    temporal = [o for o in claim3 if o.comparison.better == "moco_temporal"]
    assert all("moco_frames did not learn at this budget" in o.reason for o in temporal)
    assert cl.claim_level(claim3, gates, 0.4, 1)[0] == cl.INDICATIVE
    scope = build_module.scope_section(
        claim3, gates, 0.95, {}, 90.0
    )  # and the report says so up front
    assert (
        "6 of 8 trained variants learned" in scope and "moco_frames, moco_tracker did not" in scope
    )
    assert "segmentation mIoU smaller than about" in scope


def test_the_tables_list_params_order_with_the_untrained_network_last():
    assert Roster(MODELS).order == [*MODELS[1:], "random"]
    assert Roster(["b", "random", "a"]).order == ["b", "a", "random"]


def test_ceiling_sets_are_flagged_and_left_out_of_means(tmp_path):
    run = _run(inv={("random", "aloi_col"): 95.0})
    assert cl.ceiling_sets([run], "top10", 90.0) == {"aloi_col": 95.0}
    for m in MODELS:
        _write_results(tmp_path, m)
    _contributions(3.0).save(
        tmp_path / "invariance" / "moco_scenes" / "contributions" / "aloi_col.npz"
    )
    mean = ("invariance", "mean", "top10")
    with_col = Evidence(tmp_path, resamples=200).difference(mean, "moco_scenes", "moco_frames")
    without = Evidence(tmp_path, resamples=200, ceiling_sets=("aloi_col",)).difference(
        mean, "moco_scenes", "moco_frames"
    )
    assert with_col.difference > 0 and without.difference == 0
    assert cl.value([run], "invariance", "random", "mean", "top10", skip=("aloi_col",)) == [10.0]


def _write_summary(root, run):
    for kind, data in run.items():
        write_json(root / kind / "metrics.json", data)


@pytest.mark.e2e  # the whole report built: make test only
def test_build_writes_tables_claims_gate_and_headline(tmp_path):
    run = _run(inv={("moco_object_centric", "got10k_occlusion"): 20.0})
    _write_summary(tmp_path / "summary", run)
    for m in MODELS:
        _write_results(
            tmp_path / "results",
            m,
            accuracy=0.3 if m == "random" else 0.6,
            invariance=2.0 if m == "moco_object_centric" else 1.0,
        )
    write_json(
        tmp_path / "pretrain" / "supervised" / "summary.json",
        {
            "steps": 5,
            "final_loss": 1.5,
            "knn_top1": 0.6,
            "samples_seen": 320,
            "corpus_items": 80,
            "passes": 4.0,
        },
    )
    paths = _paths(tmp_path)
    roster = Roster(MODELS, trained=[m for m in MODELS if m != "random"])
    build(paths, roster, _params())
    text = (tmp_path / "reports" / "report.md").read_text()
    for heading in (
        "**Indicative verdicts**",
        "## What this run can and cannot show",
        "## Claims",
        "### Claim 1",
        "### Claim 2",
        "### Claim 3",
        "## Learning gate",
        "## Table 1",
        "## Table 2",
        "## Table 3",
    ):
        assert heading in text
    assert "(indicative)" in text and "kNN gap share" in text
    assert "| got10k_occlusion | 10.0 | 20.0 |" in text  # supervised, then moco_object_centric
    # Tables 2 and 3: the variants claims 2 and 3 compare, in params order
    for table, claim in (("## Table 2", 2), ("## Table 3", 3)):
        section = text.split(table)[1].split("\n## ")[0]
        rows = [line.split(" | ")[0].removeprefix("| ") for line in section.splitlines()[4:]]
        compared = {
            m for c in cl.comparisons("top10") if c.claim == claim for m in (c.better, c.worse)
        }
        assert rows == [m for m in MODELS if m in compared], rows
    assert (
        "| supervised | 5 | 320 | 80 | 4.0 | 1.500 | 0.600 |" in text
    )  # its budget, in steps and samples
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    name = "claim1.moco_object_centric_vs_supervised.got10k_occlusion.top10"
    assert metrics[f"{name}.low"] > 0 and metrics[f"{name}.high"] > metrics[f"{name}.low"]
    assert metrics["gate.moco_scenes.learned"] == 1.0
    assert metrics["gate.moco_scenes.linear_top1_minus_untrained"] == pytest.approx(0.3, abs=0.02)
    assert metrics["gate.moco_scenes.knn_top1_gap_share"] == pytest.approx(1.0)
    assert metrics["claim1.of_record"] == 0 and metrics[f"{name}.p_holm"] <= 0.05
    # the verdicts in brief: one short string per claim (its nonzero counts), no key of metrics.json
    brief = json.loads((tmp_path / "reports" / "headline.json").read_text())
    assert set(brief) == {"claim1", "claim2", "claim3", "claims_of_record"} and not set(
        brief
    ) & set(metrics)
    tally = {
        v: metrics[f"claim1.{v.replace(' ', '_')}"]
        for v in ("holds", "does not hold", "inconclusive")
    }
    assert (
        brief["claim1"] == ", ".join(f"{n} {v}" for v, n in tally.items() if n)
        and tally["holds"] >= 1
    )
    assert brief["claims_of_record"] == 0 and all(
        len(v) < 40 for k, v in brief.items() if k != "claims_of_record"
    )
    # a sweep of two more runs: spreads appear, and the verdicts use them
    sweep = tmp_path / "runs.csv"
    lines = ["run,kind,model,set,metric,value"]
    for r, (moco, sup) in enumerate(((12.0, 10.0), (8.0, 10.0))):
        lines += [
            f"exp{r},invariance,moco_object_centric,got10k_occlusion,top10,{moco}",
            f"exp{r},invariance,supervised,got10k_occlusion,top10,{sup}",
        ]
    sweep.write_text("\n".join(lines) + "\n")
    build(replace(paths, sweep=sweep), roster, _params())
    text = (tmp_path / "reports" / "report.md").read_text()
    assert "13.333 ± 6.110" in text and "3 runs" in text
    metrics = json.loads(
        (tmp_path / "reports" / "metrics.json").read_text()
    )  # 20 - 10, 12 - 10, 8 - 10: wide
    assert (
        metrics[name] == pytest.approx(10 / 3)
        and metrics[f"{name}.seeds_low"] < 0 < metrics[f"{name}.seeds_high"]
    )
    assert "the interval over seeds contains 0" in text
    (tmp_path / "summary" / "segmentation" / "metrics.json").unlink()
    with pytest.raises(ReportError, match="segmentation/metrics.json: not found"):
        build(paths, roster, _params())


PARAMS = {"pretrain.seed": 0, "pretrain.lr": 0.06}


def _exp(name: str, linear: float, **params) -> Run:
    """An experiment as sweep.read_run gives it: its own params and evaluation summaries."""
    run = _run(linear={"supervised": linear})
    run["invariance"]["supervised"]["aloi_view"]["top10"] = 11.5
    run["segmentation"]["supervised"]["all"]["miou"] = 0.2
    return Run(name, {**PARAMS, **params}, run)


def test_a_sweep_of_two_seeds_counts_two_runs(tmp_path):
    """`dvc exp run --queue -S pretrain.seed=0,1`: the seed-0 experiment is the current run (the
    workspace, the baseline) and counts once; an experiment with another lr is not pooled; the
    report's interval is over the two runs."""
    workspace = _exp("workspace", 0.5)
    runs, left_out = pool(
        workspace,
        [
            _exp("exp-seed0", 0.5),
            _exp("exp-seed1", 0.7, **{"pretrain.seed": 1}),
            _exp("exp-lr", 0.9, **{"pretrain.lr": 0.03}),
        ],
    )
    assert list(runs) == ["pretrain.seed=1"] and set(left_out) == {"exp-seed0", "exp-lr"}
    assert "pretrain.lr" in left_out["exp-lr"]
    rows_of(runs).to_csv(tmp_path / "runs.csv", index=False)
    _write_summary(tmp_path / "summary", workspace.metrics)
    result = build(
        _paths(tmp_path, sweep=tmp_path / "runs.csv"), Roster(MODELS), _params(resamples=200)
    )
    assert result["metrics"]["runs"] == 2
    assert (
        "0.600 ± 0.141" in (tmp_path / "reports" / "report.md").read_text()
    )  # supervised linear: 0.5, 0.7


def test_pr_comment_lists_only_what_differs(tmp_path):
    """The pull-request comment's diff: metrics by stage area ("no change" where nothing differs),
    params, and the head's changed PNG plots copied beside the comment as base/head pairs."""
    from demystify.tools import pr_comment as pr

    base = {
        ("results/pretrain/moco_frames/summary.json", "final_loss"): 1.5,
        ("reports/metrics.json", "claims_holding"): 1,
        ("reports/metrics.json", "claim1.low"): 0.25,
    }
    head = {
        **base,
        ("reports/metrics.json", "claim1.low"): 0.5,
        ("reports/metrics.json", "new"): True,
    }
    section = pr.metrics_section(pr.differences(base, head))
    areas = dict(part.split("\n", 1) for part in section.split("\n#### ")[1:])
    assert (
        areas["Pretraining"].strip()
        == areas["Evaluation"].strip()
        == areas["Data"].strip()
        == "no change"
    )
    assert "| reports/metrics.json | claim1.low | 0.25 | 0.5 | +0.25 |" in areas["Report"]
    assert "| reports/metrics.json | new | — | True |  |" in areas["Report"]
    assert "claims_holding" not in section
    params = pr.params_section(
        pr.differences(
            {"report.resamples": 2000, "pairs.seed": 0}, {"report.resamples": 1000, "pairs.seed": 0}
        )
    )
    assert "| report.resamples | 2000 | 1000 |" in params and "pairs.seed" not in params
    assert pr.params_section({}).endswith("no change")

    trees = {}
    for name, pixels in (("base", b"same"), ("head", b"other")):
        tree = trees[name] = tmp_path / name
        (tree / "reports").mkdir(parents=True)
        (tree / "dvc.yaml").write_text(
            "stages:\n  report:\n    plots:\n      - reports/a.png:\n          cache: false\n"
            "  summarize:\n    foreach:\n      k1: {title: t}\n    do:\n      plots:\n"
            "        - results/${key}/${key}.png:\n            cache: false\n"
            "plots:\n  - results/summary/s.png\n"
        )
        (tree / "reports/a.png").write_bytes(pixels)
        (tree / "reports/same.png").write_bytes(b"x")
        (tree / "results/summary").mkdir(parents=True)
    (trees["head"] / "results/summary/s.png").write_bytes(b"new")  # only in head
    (trees["head"] / "results/k1").mkdir()
    (trees["head"] / "results/k1/k1.png").write_bytes(b"new")  # a foreach stage's, filled in
    images = tmp_path / "out" / "pr"
    plots = pr.changed_plots(trees["base"], trees["head"], images)
    assert plots == [
        ("reports/a.png", "reports_a.base.png", "reports_a.head.png"),
        ("results/k1/k1.png", None, "results_k1_k1.head.png"),
        ("results/summary/s.png", None, "results_summary_s.head.png"),
    ]
    assert (images / "reports_a.base.png").read_bytes() == b"same"
    assert sorted(p.name for p in images.iterdir()) == [
        "reports_a.base.png",
        "reports_a.head.png",
        "results_k1_k1.head.png",
        "results_summary_s.head.png",
    ]
    assert "![reports/a.png (head)](pr/reports_a.head.png)" in pr.plots_section(plots, "pr")
