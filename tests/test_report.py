"""The report: verdicts computed from metrics (one run and several), the tables, the headline
metrics, and the sweep table read from `dvc exp show` rows."""

from __future__ import annotations

import json

import pytest

from demystify.io import write_json
from demystify.report import claims as cl
from demystify.report.build import ReportError, build
from demystify.report.sweep import rows_of

MODELS = ["random", "supervised", "moco_object_centric", "moco_scenes", "moco_scene_crops", "moco_frames",
          "moco_temporal", "moco_tracker"]
SETS = ["aloi_view", "aloi_ill", "aloi_col", "got10k_occlusion", "pascal3d_instance", "pascal3d_instance_viewpoint"]


def _run(inv=None, linear=None, miou=None):
    """A run where every model scores 10 / 0.5 / 0.3 unless overridden: {model: value}."""
    inv, linear, miou = inv or {}, linear or {}, miou or {}
    return {
        "invariance": {m: {s: {"top10": inv.get((m, s), inv.get(m, 10.0)), "top25": 5.0} for s in SETS} for m in MODELS},
        "classification": {m: {"all": {"linear_top1": linear.get(m, 0.5), "knn_top1": 0.4, "svm_map": 0.6}}
                           for m in MODELS},
        "segmentation": {m: {"all": {"miou": miou.get(m, 0.3), "pixel_accuracy": 0.8}} for m in MODELS},
    }


def test_verdict_rules():
    assert cl.verdict([1.1], [1.0], margin=0.02) == cl.HOLDS
    assert cl.verdict([1.01], [1.0], margin=0.02) == cl.INCONCLUSIVE
    assert cl.verdict([0.9], [1.0], margin=0.02) == cl.FAILS
    assert cl.verdict([], [1.0], margin=0.02) == cl.NOT_MEASURED
    # several runs: a mean difference inside twice the standard error of the paired difference is noise
    assert cl.verdict([1.2, 0.9, 1.3], [1.0, 1.0, 1.0], margin=0.0) == cl.INCONCLUSIVE
    assert cl.verdict([1.2, 1.21, 1.19], [1.0, 1.01, 0.99], margin=0.0) == cl.HOLDS
    assert cl.claim_verdict([cl.Outcome(None, [], [], cl.HOLDS)] * 2) == cl.HOLDS
    assert cl.claim_verdict([cl.Outcome(None, [], [], v) for v in (cl.HOLDS, cl.FAILS)]) == "partly holds"
    assert cl.claim_verdict([cl.Outcome(None, [], [], v) for v in (cl.INCONCLUSIVE, cl.FAILS)]) == cl.FAILS


def test_claims_follow_the_metrics():
    # claim 1 as the paper says: MoCo more occlusion-invariant, supervised more viewpoint/instance-invariant
    run = _run(inv={("moco_object_centric", "got10k_occlusion"): 20.0, ("supervised", "aloi_view"): 20.0,
                    ("supervised", "pascal3d_instance"): 20.0})
    outcomes = cl.judge([run], "top10", 0.02)
    assert cl.claim_verdict([o for o in outcomes if o.comparison.claim == 1]) == cl.HOLDS
    # claim 2: object-centric's mean invariance is higher (its occlusion score), all else equal
    claim2 = [o for o in outcomes if o.comparison.claim == 2]
    assert [o.verdict for o in claim2].count(cl.HOLDS) == 1 and cl.claim_verdict(claim2) == "partly holds"
    # the opposite data: the verdict flips, nothing is hard-coded
    flipped = _run(inv={("supervised", "got10k_occlusion"): 20.0})
    outcomes = cl.judge([flipped], "top10", 0.02)
    assert cl.claim_verdict([o for o in outcomes if o.comparison.claim == 1]) == cl.FAILS
    # claim 3 with the video variants better on everything
    better = {m: 15.0 for m in ("moco_temporal", "moco_tracker")}
    outcomes = cl.judge([_run(inv=better, linear={m: 0.7 for m in better}, miou={m: 0.5 for m in better})],
                        "top10", 0.02)
    assert cl.claim_verdict([o for o in outcomes if o.comparison.claim == 3]) == cl.HOLDS


def _write_summary(root, run):
    for kind, data in run.items():
        write_json(root / kind / "metrics.json", data)


def test_build_writes_tables_claims_and_headline(tmp_path):
    run = _run(inv={("moco_object_centric", "got10k_occlusion"): 20.0})
    _write_summary(tmp_path / "summary", run)
    write_json(tmp_path / "pretrain" / "supervised" / "summary.json", {"steps": 5, "final_loss": 1.5, "knn_top1": 0.6})
    result = build(tmp_path / "summary", tmp_path / "pretrain", tmp_path / "reports", MODELS, "top10", 0.02)
    text = (tmp_path / "reports" / "report.md").read_text()
    for heading in ("## Claims", "### Claim 1", "### Claim 2", "### Claim 3", "## Table 1", "## Table 2", "## Table 3"):
        assert heading in text
    assert "| got10k_occlusion | 10.0 | 20.0 |" in text  # supervised, then moco_object_centric
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["claim1.moco_object_centric_vs_supervised.got10k_occlusion.top10"] == 10.0
    assert metrics["claim1"] == 0.5 and result["verdicts"][1] == "partly holds"  # occlusion holds, the rest equal
    # a sweep of two more runs: spreads appear, and the verdicts use them
    sweep = tmp_path / "runs.csv"
    lines = ["run,kind,model,set,metric,value"]
    for r, (moco, sup) in enumerate(((12.0, 10.0), (8.0, 10.0))):
        lines += [f"exp{r},invariance,moco_object_centric,got10k_occlusion,top10,{moco}",
                  f"exp{r},invariance,supervised,got10k_occlusion,top10,{sup}"]
    sweep.write_text("\n".join(lines) + "\n")
    build(tmp_path / "summary", tmp_path / "pretrain", tmp_path / "reports", MODELS, "top10", 0.02, sweep)
    text = (tmp_path / "reports" / "report.md").read_text()
    assert "13.333 ± 6.110" in text and "3 runs" in text
    (tmp_path / "summary" / "segmentation" / "metrics.json").unlink()
    with pytest.raises(ReportError, match="segmentation/metrics.json: not found"):
        build(tmp_path / "summary", tmp_path / "pretrain", tmp_path / "reports", MODELS, "top10", 0.02)


def test_sweep_rows_from_exp_show():
    rows = rows_of([
        {"Experiment": "workspace", "rev": "workspace", "supervised.aloi_view.top10": 1.0},
        {"Experiment": "tidy-fern", "rev": "abc1234", "supervised.aloi_view.top10": 11.5,
         "results/summary/classification/metrics.json:supervised.all.linear_top1": 0.61,
         "supervised.all.miou": 0.2, "pretrain.lr": 0.06, "claims_holding": 2},
    ])
    assert sorted(rows.kind) == ["classification", "invariance", "segmentation"]
    assert set(rows.run) == {"tidy-fern"} and rows.value.sum() == pytest.approx(11.5 + 0.61 + 0.2)
