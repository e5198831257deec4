"""`make sweep-table`'s pooling on params composed from the real conf/ (the queued recipe itself runs
end to end in test_recipes): params compared as YAML values, each seed tuple counted once, only
seed-only differences from the workspace pooled, only the report's summary metrics read."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from demystify.report.build import load_sweep
from demystify.tools.params_file import compose
from demystify.tools.sweep import KINDS, SUMMARY, Run, SweepError, pool, read_run, rows_of
from demystify.tools.sweep import flatten as flat

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """params.yaml text for each set of overrides, composed by Hydra from the repository's conf/."""
    out = tmp_path_factory.mktemp("params")

    def make(*overrides: str) -> str:
        path = out / f"{abs(hash(overrides))}.yaml"
        compose(path, list(overrides), config_dir=ROOT / "conf")
        return path.read_text()

    return make


def metrics(knn: float) -> dict:
    """The three summary files the report reads, one model each."""
    return {
        "invariance": {"moco_tracker": {"aloi_view": {"top10": 41.0, "top25": 39.0}}},
        "classification": {
            "moco_tracker": {"all": {"knn_top1": knn, "linear_top1": 0.3, "svm_map": 0.2}}
        },
        "segmentation": {"moco_tracker": {"all": {"miou": 0.1, "pixel_accuracy": 0.6}}},
    }


def files(params_text: str, knn: float | None, dvclive: bool = True) -> dict[str, str]:
    out = {"params.yaml": params_text}
    if knn is not None:
        out.update({SUMMARY.format(kind=k): json.dumps(v) for k, v in metrics(knn).items()})
    if dvclive:  # training metrics beside them, which the table must never read
        out["results/pretrain/moco_tracker/metrics.json"] = json.dumps(
            {"train": {"loss": 7.0}, "monitor": {"knn_top1": 0.9}}
        )
    return out


def run(name: str, params_text: str, knn: float | None, state: str = "Success") -> Run:
    return read_run(name, files(params_text, knn).get, state)


def test_queued_smoke_sweep_pools_seeds_once_each(composed):
    """The recipe's sweep (-S scale=smoke -S pretrain.seed=0,1, one seed queued twice) beside a
    workspace run at the same setting with seed 0: two runs, the seed-0 experiment is the
    workspace's run, the repeated seed 1 counts once; lists and booleans (invariance.ks,
    pretrain.mlp) compare as values."""
    seed0, seed1 = (
        composed("scale=smoke", "pretrain.seed=0"),
        composed("scale=smoke", "pretrain.seed=1"),
    )
    assert (
        yaml.safe_load(seed0)["invariance"]["ks"] == [10, 25]
        and yaml.safe_load(seed0)["pretrain"]["mlp"] is True
    )
    workspace = run("workspace", seed0, 0.5)
    others = [
        run("exp-seed0", seed0, 0.5),
        run("exp-seed1", seed1, 0.25),
        run("exp-seed1-again", seed1, 0.25),
        run("exp-queued", composed("scale=smoke", "pretrain.seed=2"), None, state="Queued"),
    ]
    runs, left_out = pool(workspace, others)
    assert list(runs) == ["pretrain.seed=1"] and runs["pretrain.seed=1"].name == "exp-seed1"
    assert "workspace's run" in left_out["exp-seed0"]
    assert (
        "counted once" in left_out["exp-seed1-again"] and "exp-seed1" in left_out["exp-seed1-again"]
    )
    assert left_out["exp-queued"] == "no results (Queued)"
    table = rows_of(runs)
    # every summary value of the run and nothing else: dvclive's train/loss, monitor/knn_top1 never
    assert len(table) == 2 + 3 + 2 and set(table["run"]) == {"pretrain.seed=1"}
    assert set(table["kind"]) == set(KINDS) and "loss" not in set(table["metric"])
    knn = table[(table["metric"] == "knn_top1")]["value"].tolist()
    assert knn == [0.25]


def test_a_sweep_at_another_scale_is_not_pooled_with_the_workspace(composed):
    """`-S scale=smoke` experiments beside a default-scale workspace differ in the scale's params:
    left out, each with the params that differ, and the table has no row."""
    workspace = run("workspace", composed(), 0.5)
    others = [
        run("exp-seed0", composed("scale=smoke", "pretrain.seed=0"), 0.5),
        run("exp-seed1", composed("scale=smoke", "pretrain.seed=1"), 0.25),
    ]
    runs, left_out = pool(workspace, others)
    assert runs == {} and set(left_out) == {"exp-seed0", "exp-seed1"}
    assert left_out["exp-seed1"].startswith("differs from the workspace in classification.knn.k, ")
    assert left_out["exp-seed1"].endswith(" more")  # the scale's 52 params, the first five named
    assert rows_of(runs).empty


def test_an_added_key_or_another_value_is_a_difference(composed):
    """A variant added with + (a key the workspace lacks) and a changed list are differences; a
    seed of a stage other than pretraining pools like any seed."""
    base = composed("scale=smoke")
    workspace = run("workspace", base, 0.5)
    extra = composed(
        "scale=smoke", "+variants.moco_extra={method:moco,positives:images,data:data/frames}"
    )
    ks = composed("scale=smoke", "invariance.ks=[10]")
    world = composed("scale=smoke", "classification.seed=3")
    runs, left_out = pool(
        workspace, [run("extra", extra, 0.5), run("ks", ks, 0.5), run("cls", world, 0.4)]
    )
    assert "variants.moco_extra.data" in left_out["extra"] and "invariance.ks" in left_out["ks"]
    assert list(runs) == ["classification.seed=3"]


def test_table_reads_back_as_one_run_per_seed_tuple(composed, tmp_path):
    """The CSV the report stage reads: one run per label, each value as written."""
    from demystify.core.io import write_csv

    runs, _ = pool(
        run("workspace", composed("scale=smoke"), 0.5),
        [
            run("a", composed("scale=smoke", "pretrain.seed=1"), 0.25),
            run("b", composed("scale=smoke", "pretrain.seed=2"), 0.125),
        ],
    )
    write_csv(tmp_path / "runs.csv", rows_of(runs))
    back = load_sweep(tmp_path / "runs.csv")
    assert [r["classification"]["moco_tracker"]["all"]["knn_top1"] for r in back] == [0.25, 0.125]
    assert pd.read_csv(tmp_path / "runs.csv")["run"].nunique() == 2


def test_a_workspace_without_params_is_named():
    with pytest.raises(SweepError, match="workspace: params.yaml not found"):
        read_run("workspace", {}.get)
    assert flat({"a": {"b": [1, 2], "c": True}}) == {"a.b": [1, 2], "a.c": True}
