"""End to end: real `dvc repro` in a temporary copy of the repository (smoke scale): what runs, what
reruns after a change, what comes back from the run-cache, what each stage writes. The recipes a
user runs (sweeps, own data, a new variant, a remote, pull-request reports): test_recipes.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from dvc_cmd import stage_argv
from dvc_repo import (
    PAIR_VARIANTS,
    VARIANT_DATA,
    VARIANTS,
    _backbones,
    _run,
    _stages_cached,
    _stages_run,
    _write_params,
    make_repo,
)

from demystify.core.frames_store import read_manifest, shard_of

pytestmark = pytest.mark.e2e  # a whole DVC repository reproduced


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("repo"))


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if before[k] != after[k]}


ALL_PRETRAIN = [f"pretrain@{v}" for v in VARIANTS]
EVALS = ("evaluate_invariance", "evaluate_classification", "evaluate_segmentation")  # per model
SUMMARIES = [
    "summarize@invariance",
    "summarize@classification",
    "summarize@segmentation",
    "report",
    "publish_report",
]
TRAINING_SUMMARY = "summarize_training"  # reads every variant's curves
PARAMS_CHECK = "check_params"  # reruns on any change to params.yaml (no output, nothing to cache)


def _work(proc) -> list[str]:
    """The stages that ran, less the whole-file params check, which any params change reruns."""
    return [s for s in _stages_run(proc) if s != PARAMS_CHECK]


def downstream(models: list[str]) -> list[str]:
    """The evaluation stages of `models` and the summaries over all models."""
    return [f"{e}@{m}" for e in EVALS for m in models] + SUMMARIES


def test_repro_then_noop_then_only_what_changed(repo):
    path, env = repo
    first = _run(["dvc", "repro"], path, env)
    assert PARAMS_CHECK in _stages_run(first)
    ran = _work(first)
    shards = [
        f"extract_frames@{k}"
        for k in yaml.safe_load((path / "params.yaml").read_text())["frames"]["shards"]
    ]
    assert ran[:2] == ["synthesize", "plan_shards"]  # the shards' video lists, then the shards
    assert sorted(ran[2 : 2 + len(shards)]) == shards  # readers of data/frames after all shards
    assert ran[2 + len(shards) : 4 + len(shards)] == ["mine_pairs", "check_data"]
    assert sorted(ran[4 + len(shards) :]) == sorted(
        ALL_PRETRAIN + downstream(VARIANTS) + [TRAINING_SUMMARY]
    )
    params = yaml.safe_load((path / "params.yaml").read_text())
    for v in VARIANTS:  # every variant trained and exported a torchvision backbone
        assert (path / "models" / v / "backbone.pt").stat().st_size > 0
        summary = json.loads((path / "results" / "pretrain" / v / "summary.json").read_text())
        if v == "random":
            assert summary["steps"] == 0
        else:
            # equal budgets: every trained variant the same steps and samples, whatever its corpus size
            assert summary["steps"] == params["pretrain"]["steps"]
            assert (
                summary["samples_seen"]
                == params["pretrain"]["steps"] * params["pretrain"]["batch_size"]
            )
            assert summary["final_loss"] > 0 and 0 <= summary["knn_top1"] <= 1
    sizes = {
        v: json.loads((path / "results/pretrain" / v / "summary.json").read_text())["corpus_items"]
        for v in ("moco_object_centric", "moco_scenes", "moco_scene_crops")
    }
    assert len(set(sizes.values())) == 1, (
        sizes
    )  # claim 2's corpora: equal unique images, one budget
    v, f = params["world"]["videos"], params["frames"]
    manifest = read_manifest(path / "data/frames")  # every shard's
    per_video = round(v["frames"] / v["fps"] * f["fps"])
    assert manifest.groupby("video").size().to_dict() == {
        f"GOT-10k_Train_{i + 1:06d}": per_video for i in range(v["count"])
    }
    assert (
        manifest[["x", "y", "w", "h", "cover"]].notna().all().all()
    )  # GOT-10k ground truth carried
    metrics = [
        json.loads((path / f"results/frames/shard-{k}/metrics.json").read_text())
        for k in range(len(shards))
    ]
    assert sum(m["videos_rejected"] for m in metrics) == 0 and sum(
        m["frames"] for m in metrics
    ) == len(manifest)

    second = _run(["dvc", "repro"], path, env)
    assert _stages_run(second) == []
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}

    # machine settings (machine.yaml: workers, resident memory, checkpoint frequency) change speed,
    # never results: every one changed, every stage is still up to date
    committed = (path / "machine.yaml").read_text()
    (path / "machine.yaml").write_text(
        "frames: {workers: 1}\npairs: {workers: 1}\npretrain: {workers: 0, resident_mb: 0, checkpoint_every: 1}\n"
        "invariance: {workers: 1}\nclassification: {workers: 1}\nsegmentation: {workers: 1}\n"
    )
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}
    (path / "machine.yaml").write_text(committed)

    pairs = pd.read_parquet(path / "data/pairs/pairs.parquet")
    assert len(pairs) == json.loads((path / "results/pairs/metrics.json").read_text())["pairs"] > 0
    assert (path / "results/pairs/pairs.png").stat().st_size > 0
    checks = json.loads((path / "results/checks/summary.json").read_text())
    assert (
        checks["corpora"]["object_centric"]["object_centric"]
        and not checks["corpora"]["scenes"]["object_centric"]
    )

    # an upstream change reruns what reads it: the video variants retrain from step 0 on the new
    # pairs, the other variants are untouched, and the evaluations of the two are out of date
    before = _backbones(path)
    params["pairs"]["seed"] = 1
    _write_params(path, params)
    proc = _run(["dvc", "repro", "pretrain"], path, env)  # the foreach group: every pretrain@ stage
    pair_models = PAIR_VARIANTS  # moco_temporal, moco_tracker, moco_tracker_crops
    ran = _stages_run(proc)  # DVC orders independent stages of a group as it likes
    assert ran[:2] == ["mine_pairs", "check_data"] and sorted(ran[2:]) == [
        f"pretrain@{m}" for m in pair_models
    ]
    assert "resuming" not in proc.stderr
    assert _changed(before, _backbones(path)) == set(pair_models)
    for m in pair_models:
        summary = json.loads((path / "results" / "pretrain" / m / "summary.json").read_text())
        assert summary["steps"] >= 1 and summary["final_loss"] > 0
    stale = set(json.loads(_run(["dvc", "status", "--json"], path, env).stdout))
    assert {f"{e}@{m}" for e in EVALS for m in pair_models} <= stale
    assert not {f"{e}@{m}" for e in EVALS for m in VARIANTS if m not in pair_models} & stale

    # back to the first setting: every stage comes back from DVC's run-cache, nothing is retrained
    params["pairs"]["seed"] = 0
    _write_params(path, params)
    proc = _run(["dvc", "repro"], path, env)
    assert _work(proc) == []
    assert {"mine_pairs", "pretrain@moco_tracker"} <= set(_stages_cached(proc))
    assert _backbones(path) == before
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}

    # an evaluation param makes that evaluation (and, through its results, its summary and the
    # report) out of date, nothing upstream and no other evaluation: what `dvc repro` would rerun,
    # asked of `dvc status`
    params["classification"]["knn"]["k"] = 2
    _write_params(path, params)
    stale = set(json.loads(_run(["dvc", "status", "--json"], path, env).stdout))
    assert stale - {PARAMS_CHECK} == {f"evaluate_classification@{m}" for m in VARIANTS}
    params["classification"]["knn"]["k"] = 3
    _write_params(path, params)
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}


def _shard_files(path) -> dict[str, dict[str, bytes]]:
    return {
        s.name: {
            f.relative_to(s).as_posix(): f.read_bytes() for f in sorted(s.rglob("*")) if f.is_file()
        }
        for s in sorted((path / "data/frames").glob("shard-*"))
    }


def test_a_new_video_or_a_failed_shard_costs_one_shard(repo):
    """A new video reruns plan_shards and then its own shard alone (the other shard's list keeps its
    bytes: up to date), changing only that shard's outputs; a shard that fails (too many rejected)
    leaves every other shard's outputs and dvc.lock entry in place; taking both back restores every
    shard from the run-cache and leaves the pipeline up to date."""
    path, env = repo
    videos = path / "data/world/videos"
    before = _shard_files(path)
    new, bad = (
        "zz_new0",
        "zz_bad6",
    )  # frames_store.shard_of of 4: shard 0 (beside video 2) and shard 2 (empty)
    assert (shard_of(new, 4), shard_of(bad, 4)) == (0, 2) and len(before) == 4
    assert not [f for f in before["shard-2"] if f.endswith(".zip")]
    (videos / f"{new}.mp4").write_bytes((videos / "GOT-10k_Train_000002.mp4").read_bytes())
    stale = set(json.loads(_run(["dvc", "status", "--json"], path, env).stdout))
    assert "plan_shards" in stale and not any(
        s.startswith("extract_frames") for s in stale
    )  # only the lists
    assert _stages_run(_run(["dvc", "repro", "--single-item", "plan_shards"], path, env)) == [
        "plan_shards"
    ]
    stale = set(json.loads(_run(["dvc", "status", "--json"], path, env).stdout))
    assert {s for s in stale if s.startswith("extract_frames")} == {
        "extract_frames@0"
    }  # other lists: same bytes
    proc = _run(["dvc", "repro", "--single-item", "extract_frames"], path, env)
    assert _stages_run(proc) == ["extract_frames@0"]
    after = _shard_files(path)
    assert {k: v for k, v in after.items() if k != "shard-0"} == {
        k: v for k, v in before.items() if k != "shard-0"
    }
    assert set(after["shard-0"]) - set(before["shard-0"]) == {f"{new}.zip"}
    assert after["shard-0"][f"{new}.zip"] == after["shard-0"]["GOT-10k_Train_000002.zip"]
    (videos / f"{new}.mp4").unlink()

    (videos / f"{bad}.mp4").write_bytes(
        b""
    )  # 1 of 1 video of shard 2 rejected: over frames.max_rejected
    _run(
        ["dvc", "repro", "--single-item", "plan_shards"], path, env
    )  # shard 0: its list before the new video
    proc = subprocess.run(
        ["dvc", "repro", "--keep-going", "--single-item", "extract_frames"],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and f"{bad}.mp4: moov atom not found" in proc.stderr
    failed = _shard_files(path)
    assert all(
        failed[k] == before[k] for k in before if k != "shard-2"
    )  # the other shards: done, and as they were
    stale = set(json.loads(_run(["dvc", "status", "--json"], path, env).stdout))
    assert {s for s in stale if s.startswith("extract_frames")} == {"extract_frames@2"}
    (videos / f"{bad}.mp4").unlink()
    _run(["dvc", "repro", "--single-item", "plan_shards"], path, env)
    proc = _run(["dvc", "repro", "--single-item", "extract_frames"], path, env)
    assert "extract_frames@2" in _stages_cached(proc) and _shard_files(path) == before
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}


def test_new_frames_retrain_what_reads_them(repo):
    """A new JPEG quality changes every frame: the variants that train on frames (moco_frames, and
    through the pairs manifest's frame MD5s the pair variants) retrain from step 0, the others
    do not; switching back restores the earlier models from the run-cache."""
    path, env = repo
    params = yaml.safe_load((path / "params.yaml").read_text())
    before = _backbones(path)
    params["frames"]["jpeg_quality"] = 6
    _write_params(path, params)
    proc = _run(["dvc", "repro", "pretrain"], path, env)  # the foreach group: every pretrain@ stage
    frame_models = {v for v, data in VARIANT_DATA.items() if data == "data/frames"} | set(
        PAIR_VARIANTS
    )
    assert {s for s in _stages_run(proc) if s.startswith("pretrain@")} == {
        f"pretrain@{m}" for m in frame_models
    }
    assert "resuming" not in proc.stderr
    assert _changed(before, _backbones(path)) == frame_models
    params["frames"]["jpeg_quality"] = 3
    _write_params(path, params)
    proc = _run(["dvc", "repro", "pretrain"], path, env)
    assert _stages_run(proc) == [] and _backbones(path) == before
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}


def test_failed_data_checks_train_nothing(repo):
    """With centricity required, the scenes corpus fails it: whether the training stage is the
    target or everything runs with --keep-going, nothing trains and the check's message is shown."""
    path, env = repo
    params = yaml.safe_load((path / "params.yaml").read_text())
    committed = list(params["checks"]["fail_on"])
    params["checks"]["fail_on"] = [*committed, "centricity"]
    _write_params(path, params)
    for cmd in (["dvc", "repro", "pretrain@moco_scenes"], ["dvc", "repro", "--keep-going"]):
        proc = subprocess.run(cmd, cwd=path, env=env, capture_output=True, text=True)
        assert proc.returncode != 0, cmd
        assert not [s for s in _work(proc) if s != "check_data"], cmd
        assert (
            "data checks failed (checks.fail_on)" in proc.stderr
            and "centricity_scenes" in proc.stderr
        )
    gate = json.loads((path / "results/checks/gate.json").read_text())
    assert not gate["passed"] and any("centricity_scenes" in f for f in gate["failures"])
    # the training stage itself refuses, whoever runs it
    proc = subprocess.run(
        stage_argv("pretrain", path / "params.yaml", "moco_scenes", root=path),
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 1
        and "nothing is trained" in proc.stderr
        and "centricity_scenes" in proc.stderr
    )
    params["checks"]["fail_on"] = committed
    _write_params(path, params)
    proc = _run(["dvc", "repro"], path, env)
    assert _work(proc) == [] and "check_data" in _stages_cached(proc)


def test_evaluation_outputs(repo):
    """Every model's invariance, classification and segmentation results, and a feature file that,
    scored independently, gives the stage's number."""
    from demystify.evaluation.invariance import invariance_scores

    path, _ = repo
    for kind, keys in (
        ("invariance", None),
        ("classification", ["linear_top1", "knn_top1", "svm_map"]),
        ("segmentation", ["miou", "pixel_accuracy"]),
    ):
        summary = json.loads((path / "results" / "summary" / kind / "metrics.json").read_text())
        assert set(summary) == set(VARIANTS)
        assert (path / "results" / "summary" / kind / f"{kind}.png").stat().st_size > 1000
        for model in VARIANTS:
            if keys:
                assert all(0 <= summary[model]["all"][k] <= 1 for k in keys), (kind, model)
    inv = json.loads((path / "results/invariance/moco_object_centric/metrics.json").read_text())
    assert {"aloi_view", "aloi_ill", "aloi_col", "got10k_occlusion", "pascal3d_instance"} <= set(
        inv
    )
    import numpy as np

    with np.load(path / "results/invariance/moco_object_centric/features/aloi_view.npz") as f:
        width = yaml.safe_load((path / "params.yaml").read_text())["pretrain"][
            "width"
        ]  # of resnet18's 512
        assert f["feat"].shape[1] == int(512 * width) and len(f["path"]) == len(f["instance"])
        recomputed = invariance_scores(f["feat"], f["instance"], f["classes"], (10, 25))
    assert recomputed[10] == pytest.approx(inv["aloi_view"]["top10"], abs=1e-6)
    assert (path / "results/segmentation/supervised/examples.png").is_file()
    assert (path / "results/classification/supervised/confusion.png").is_file()


def test_report_and_pr_comment(repo):
    """The report holds the three tables and computed claims, and its headline is a DVC metric
    (`make pr-report`'s comparison of two revisions is the last test of this module)."""
    path, env = repo
    text = (path / "reports/report.md").read_text()
    for heading in (
        "### Claim 1",
        "### Claim 2",
        "### Claim 3",
        "## Table 1",
        "## Table 2",
        "## Table 3",
    ):
        assert heading in text
    headline = json.loads((path / "reports/metrics.json").read_text())
    for claim in (1, 2, 3):  # the verdict line's counts and the claim's weight
        assert {
            f"claim{claim}.holds",
            f"claim{claim}.does_not_hold",
            f"claim{claim}.inconclusive",
            f"claim{claim}.of_record",
        } <= set(headline)
        assert headline[f"claim{claim}.of_record"] == 0  # one seed at the smoke scale: indicative
    assert "**Indicative verdicts**" in text and "(indicative)" in text
    assert (
        "## Learning gate" in text and "% CI]" in text
    )  # intervals and the gate from the real stages
    assert {f"gate.{m}.learned" for m in VARIANTS if m != "random"} <= set(headline)
    assert any(k.endswith(".low") for k in headline)
    shown = _run(["dvc", "metrics", "show", "--json"], path, env).stdout
    assert "claim1.of_record" in shown


def _snapshot_clone(path, env, dest):
    """A clone of everything the workspace would commit (git add -A), left untouched: HEAD and the
    index stay as they are; the snapshot is a branch built from a separate index."""
    snap = {**env, "GIT_INDEX_FILE": str(dest.parent / "snapshot.index")}
    _run(["git", "add", "-A"], path, snap)
    tree = _run(["git", "write-tree"], path, snap).stdout.strip()
    commit = _run(
        ["git", "commit-tree", tree, "-p", "HEAD", "-m", "snapshot"], path, env
    ).stdout.strip()
    _run(["git", "branch", "-f", "snapshot", commit], path, env)
    _run(["git", "clone", "-q", "-b", "snapshot", str(path), str(dest)], path.parent, env)
    return dest


def test_a_clone_reads_the_report_every_picture_and_the_verdicts(repo, tmp_path):
    """What git holds: the report (the same bytes as the stage's cached one) and its figures, every
    plot, the headline; a clone without DVC's cache shows them all, and `make exp-table` is narrow."""
    path, env = repo
    report = (path / "reports/report.md").read_bytes()
    assert report == (path / "results/report/report.md").read_bytes()  # publish_report's copy
    for name in ("invariance.png", "classification.png", "segmentation.png"):
        assert f"]({name})".encode() in report and (path / "reports" / name).is_file()
    headline = json.loads((path / "reports/headline.json").read_text())
    assert set(headline) == {"claim1", "claim2", "claim3", "claims_of_record"}
    assert headline["claims_of_record"] == 0 and all(
        "inconclusive" in headline[f"claim{c}"] or "hold" in headline[f"claim{c}"]
        for c in (1, 2, 3)
    )
    clone = _snapshot_clone(path, env, tmp_path / "clone")
    pictures = [
        "reports/report.md",
        "results/pairs/pairs.png",
        *[f"results/summary/{k}/{k}.png" for k in ("invariance", "classification", "segmentation")],
    ]
    for rel in pictures:
        assert (clone / rel).read_bytes() == (path / rel).read_bytes(), rel
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], clone, env).stdout)
    assert not plots.get("errors"), plots.get(
        "errors"
    )  # nothing missing: no plot is in DVC's cache
    assert {"results/pairs/pairs.png", "reports/invariance.png"} <= set(plots["data"])
    shown = _run(["dvc", "metrics", "show", "reports/headline.json"], clone, env).stdout
    assert headline["claim1"] in shown and max(map(len, shown.splitlines())) < 200
    # the experiments table: every row's verdicts, narrow (`dvc exp show` alone: hundreds of columns)
    table = _run(
        ["make", "-o", ".venv/.installed", "exp-table"], clone, {**env, "COLUMNS": "1000"}
    ).stdout
    lines = [line for line in table.splitlines() if line.strip()]
    assert "claim1" in table and "claims_of_record" in table and "pretrain.seed" in table
    assert headline["claim2"] in table and max(map(len, lines)) < 200, table


def test_a_tried_then_removed_variant_leaves_every_later_stage_cacheable(repo):
    """A variant added, reproduced and removed again: once `make run` has deleted its folders
    (src/demystify/leftovers.py), every later stage is the run without it, restored from the
    run-cache, and DVC's `/extra` lines in results/*/.gitignore (what a fresh worktree of a commit
    still holds) change no dependency (.dvcignore)."""
    from demystify.tools.leftovers import FOLDERS

    path, env = repo
    params = yaml.safe_load((path / "params.yaml").read_text())
    before = {
        p: p.read_bytes()
        for p in [path / "reports/report.md", *(path / "results/summary").rglob("*.*")]
    }
    params["variants"]["extra"] = dict(
        params["variants"]["random"]
    )  # untrained: the cheapest to add
    _write_params(path, params)
    proc = _run(["dvc", "repro"], path, env)
    assert sorted(_work(proc)) == sorted(
        ["pretrain@extra", *downstream(["extra"]), TRAINING_SUMMARY]
    )
    assert "extra" in json.loads((path / "results/summary/classification/metrics.json").read_text())
    ignored = {f: (path / f / ".gitignore").read_text() for f in FOLDERS[1:]}
    assert all("/extra\n" in text for text in ignored.values()), ignored

    del params["variants"]["extra"]
    _write_params(path, params)
    stale = set(json.loads(_run(["dvc", "status", "--json"], path, env).stdout))
    later = {
        "summarize@invariance",
        "summarize@classification",
        "summarize@segmentation",
        "report",
        TRAINING_SUMMARY,
    }
    assert (
        stale - {PARAMS_CHECK} == later
    )  # they read the variants param (and the leftover folders are in their deps)
    removed = _run([sys.executable, "-m", "demystify.tools.leftovers"], path, env).stdout.split(
        "\n"
    )
    assert sorted(removed) == sorted(["", *(f"removed: {f}/extra" for f in FOLDERS)])
    for (
        folder,
        text,
    ) in ignored.items():  # DVC's lines back, as a checkout of the first run has them
        (path / folder / ".gitignore").write_text(text)
    proc = _run(["dvc", "repro"], path, env)
    assert later <= set(_stages_cached(proc))
    assert not [
        s for s in _work(proc) if s != "publish_report"
    ]  # a copy, never run-cached (dvc.yaml)
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}
    assert before == {p: p.read_bytes() for p in before}  # the first run's very bytes
    assert all(
        (path / f / v).is_dir() for f in FOLDERS for v in VARIANTS
    )  # no current variant touched
