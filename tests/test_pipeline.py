"""End to end: real `dvc repro` / `dvc exp run` in a temporary copy of the repository (smoke scale)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_cmd import stage_argv

from demystify.params_file import compose

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _output(rel: str) -> bool:
    """A pipeline output (left behind), not an input: the sweep table is the report's input."""
    return (rel.startswith(("data/", "results/", "reports/", "models/")) and not rel.startswith("results/sweep/")) \
        or rel == "dvc.lock"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repo holding the project's files (tracked and new, not ignored), smoke params."""
    dest = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for rel in listed:
        src = ROOT / rel
        if src.is_file() and not _output(rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    compose(dest / "params.yaml", ["scale=smoke"], config_dir=dest / "conf")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(dest / "src"), "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "test@example.com"],
                ["git", "config", "user.name", "test"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"],
                ["dvc", "config", "--local", "core.site_cache_dir", str(dest / ".dvc" / "site_cache")]):
        _run(cmd, dest, env)
    return dest, env


def _stages_run(proc: subprocess.CompletedProcess) -> list[str]:
    text = proc.stdout + proc.stderr
    return [line.split("'")[1] for line in text.splitlines() if line.startswith("Running stage '")]


def _stages_cached(proc: subprocess.CompletedProcess) -> list[str]:
    """Stages DVC restored from its run-cache instead of running them."""
    text = proc.stdout + proc.stderr
    return [line.split("'")[1] for line in text.splitlines() if "is cached - skipping run" in line]


def _write_params(path: Path, params: dict) -> None:
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _backbones(path: Path) -> dict[str, str]:
    return {v: hashlib.md5((path / "models" / v / "backbone.pt").read_bytes()).hexdigest() for v in VARIANTS}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if before[k] != after[k]}


VARIANTS = list(yaml.safe_load((ROOT / "params.yaml").read_text())["variants"])  # whatever params declares
ALL_PRETRAIN = [f"pretrain@{v}" for v in VARIANTS]
EVALS = ("evaluate",)
SUMMARIES = ["summarize_invariance", "summarize_classification", "summarize_segmentation", "report"]
TRAINING_SUMMARY = "summarize_training"  # reads every variant's curves


def downstream(models: list[str]) -> list[str]:
    """The evaluation stages of `models` and the summaries over all models."""
    return [f"{e}@{m}" for e in EVALS for m in models] + SUMMARIES




def test_repro_then_noop_then_only_what_changed(repo):
    path, env = repo
    first = _run(["dvc", "repro"], path, env)
    ran = _stages_run(first)
    assert ran[:4] == ["synthesize", "extract_frames", "mine_pairs", "check_data"]
    assert sorted(ran[4:]) == sorted(ALL_PRETRAIN + downstream(VARIANTS) + [TRAINING_SUMMARY])
    params = yaml.safe_load((path / "params.yaml").read_text())
    for v in VARIANTS:  # every variant trained and exported a torchvision backbone
        assert (path / "models" / v / "backbone.pt").stat().st_size > 0
        summary = json.loads((path / "results" / "pretrain" / v / "summary.json").read_text())
        if v == "random":
            assert summary["steps"] == 0
        else:
            # equal budgets: every trained variant the same steps and samples, whatever its corpus size
            assert summary["steps"] == params["pretrain"]["steps"]
            assert summary["samples_seen"] == params["pretrain"]["steps"] * params["pretrain"]["batch_size"]
            assert summary["final_loss"] > 0 and 0 <= summary["knn_top1"] <= 1
    sizes = {v: json.loads((path / "results/pretrain" / v / "summary.json").read_text())["corpus_items"]
             for v in ("moco_object_centric", "moco_scenes")}
    assert sizes["moco_object_centric"] > sizes["moco_scenes"], sizes  # two corpus sizes, one budget
    v, f = params["world"]["videos"], params["frames"]
    manifest = pd.read_parquet(path / "data/frames/manifest.parquet")
    per_video = round(v["frames"] / v["fps"] * f["fps"])
    assert manifest.groupby("video").size().to_dict() == {
        f"GOT-10k_Train_{i + 1:06d}": per_video for i in range(v["count"])}
    assert manifest[["x", "y", "w", "h", "cover"]].notna().all().all()  # GOT-10k ground truth carried
    metrics = json.loads((path / "results/frames/metrics.json").read_text())
    assert metrics["videos_rejected"] == 0 and metrics["frames"] == len(manifest)

    second = _run(["dvc", "repro"], path, env)
    assert _stages_run(second) == []
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}

    pairs = pd.read_parquet(path / "data/pairs/pairs.parquet")
    assert len(pairs) == json.loads((path / "results/pairs/metrics.json").read_text())["pairs"] > 0
    assert (path / "results/pairs/pairs.png").stat().st_size > 0
    checks = json.loads((path / "results/checks/summary.json").read_text())
    assert checks["corpora"]["object_centric"]["object_centric"] and not checks["corpora"]["scenes"]["object_centric"]

    # an upstream change reruns what reads it: the video variants retrain from step 0 on the new
    # pairs, the other variants are untouched, and the evaluations of the two are out of date
    before = _backbones(path)
    params["pairs"]["seed"] = 1
    _write_params(path, params)
    proc = _run(["dvc", "repro", "pretrain"], path, env)  # the foreach group: every pretrain@ stage
    pair_models = ["moco_temporal", "moco_tracker"]
    ran = _stages_run(proc)  # DVC orders independent stages of a group as it likes
    assert ran[:2] == ["mine_pairs", "check_data"] and sorted(ran[2:]) == [f"pretrain@{m}" for m in pair_models]
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
    assert _stages_run(proc) == []
    assert {"mine_pairs", "pretrain@moco_tracker"} <= set(_stages_cached(proc))
    assert _backbones(path) == before
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}

    # an evaluation param makes that evaluation (and, through its results, its summary and the
    # report) out of date, nothing upstream: what `dvc repro` would rerun, asked of `dvc status`
    params["classification"]["knn"]["k"] = 2
    _write_params(path, params)
    stale = set(json.loads(_run(["dvc", "status", "--json"], path, env).stdout))
    assert stale == {f"evaluate@{m}" for m in VARIANTS}
    params["classification"]["knn"]["k"] = 3
    _write_params(path, params)
    assert json.loads(_run(["dvc", "status", "--json"], path, env).stdout) == {}


def test_new_frames_retrain_what_reads_them(repo):
    """A new JPEG quality changes every frame: the variants that train on frames (moco_frames, and
    through the pairs manifest's frame MD5s the two video variants) retrain from step 0, the others
    do not; switching back restores the earlier models from the run-cache."""
    path, env = repo
    params = yaml.safe_load((path / "params.yaml").read_text())
    before = _backbones(path)
    params["frames"]["jpeg_quality"] = 6
    _write_params(path, params)
    proc = _run(["dvc", "repro", "pretrain"], path, env)  # the foreach group: every pretrain@ stage
    frame_models = {"moco_frames", "moco_temporal", "moco_tracker"}
    assert {s for s in _stages_run(proc) if s.startswith("pretrain@")} == {f"pretrain@{m}" for m in frame_models}
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
    params["checks"]["fail_on"] = ["frames_manifest", "pairs_manifest", "centricity"]
    _write_params(path, params)
    for cmd in (["dvc", "repro", "pretrain@moco_scenes"], ["dvc", "repro", "--keep-going"]):
        proc = subprocess.run(cmd, cwd=path, env=env, capture_output=True, text=True)
        assert proc.returncode != 0, cmd
        assert not [s for s in _stages_run(proc) if s != "check_data"], cmd
        assert "data checks failed (checks.fail_on)" in proc.stderr and "centricity_scenes" in proc.stderr
    gate = json.loads((path / "results/checks/gate.json").read_text())
    assert not gate["passed"] and any("centricity_scenes" in f for f in gate["failures"])
    # the training stage itself refuses, whoever runs it
    proc = subprocess.run(stage_argv("pretrain", path / "params.yaml", "moco_scenes", root=path), cwd=path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "nothing is trained" in proc.stderr and "centricity_scenes" in proc.stderr
    params["checks"]["fail_on"] = ["frames_manifest", "pairs_manifest"]
    _write_params(path, params)
    proc = _run(["dvc", "repro"], path, env)
    assert _stages_run(proc) == [] and "check_data" in _stages_cached(proc)


def test_evaluation_outputs(repo):
    """Every model's invariance, classification and segmentation results, and a feature file that,
    scored independently, gives the stage's number."""
    from demystify.evaluation.invariance import invariance_scores

    path, _ = repo
    for kind, keys in (("invariance", None), ("classification", ["linear_top1", "knn_top1", "svm_map"]),
                       ("segmentation", ["miou", "pixel_accuracy"])):
        summary = json.loads((path / "results" / "summary" / kind / "metrics.json").read_text())
        assert set(summary) == set(VARIANTS)
        assert (path / "results" / "summary" / kind / f"{kind}.png").stat().st_size > 1000
        for model in VARIANTS:
            if keys:
                assert all(0 <= summary[model]["all"][k] <= 1 for k in keys), (kind, model)
    inv = json.loads((path / "results/invariance/moco_object_centric/metrics.json").read_text())
    assert {"aloi_view", "aloi_ill", "aloi_col", "got10k_occlusion", "pascal3d_instance"} <= set(inv)
    import numpy as np

    with np.load(path / "results/invariance/moco_object_centric/features/aloi_view.npz") as f:
        assert f["feat"].shape[1] == 512 and len(f["path"]) == len(f["instance"])
        recomputed = invariance_scores(f["feat"], f["instance"], f["classes"], (10, 25))
    assert recomputed[10] == pytest.approx(inv["aloi_view"]["top10"], abs=1e-6)
    assert (path / "results/segmentation/supervised/examples.png").is_file()
    assert (path / "results/classification/supervised/confusion.png").is_file()


def test_report_and_pr_comment(repo):
    """The report holds the three tables and computed claims, and its headline is a DVC metric
    (`make pr-report`'s comparison of two revisions is the last test of this module)."""
    path, env = repo
    text = (path / "reports/report.md").read_text()
    for heading in ("### Claim 1", "### Claim 2", "### Claim 3", "## Table 1", "## Table 2", "## Table 3"):
        assert heading in text
    headline = json.loads((path / "reports/metrics.json").read_text())
    assert {"claim1", "claim2", "claim3", "claims_holding"} <= set(headline)
    assert "## Learning gate" in text and "% CI]" in text  # intervals and the gate from the real stages
    assert {f"gate.{m}.learned" for m in VARIANTS if m != "random"} <= set(headline)
    assert any(k.endswith(".low") for k in headline)
    shown = _run(["dvc", "metrics", "show", "--json"], path, env).stdout
    assert "claims_holding" in shown


def test_sweep_value_seen_before_is_restored_not_retrained(repo):
    """A sweep over pretrain.lr through `dvc exp run -S` (Hydra composes conf/ into params.yaml),
    then the first value again: DVC restores the training stage from its run-cache (the log says
    so) with the first run's very bytes."""
    path, env = repo
    target = "pretrain@moco_object_centric"
    runs = {}
    for lr in ("0.03", "0.1", "0.03"):
        proc = _run(["dvc", "exp", "run", "-S", "scale=smoke", "-S", f"pretrain.lr={lr}", target], path, env)
        runs.setdefault(lr, []).append((proc, _backbones(path)["moco_object_centric"]))
        params = yaml.safe_load((path / "params.yaml").read_text())  # composed: the smoke scale, the override
        assert params["pretrain"]["lr"] == float(lr) and params["world"]["image_size"] == 32
        assert params["pairs"]["source"] == "tracker" and params["classification"]["knn"]["k"] == 3
    (first, first_model), (again, again_model) = runs["0.03"]
    (_, other_model), = runs["0.1"]
    assert _stages_run(first) == [target] and first_model != other_model
    assert _stages_run(again) == [] and target in _stages_cached(again) and again_model == first_model
    assert '"lr":0.1' in _run(["dvc", "exp", "show", "--json"], path, env).stdout.replace(" ", "")  # the sweep listed


def test_readme_recipe_own_videos_with_data_folder(repo, tmp_path):
    """`dvc exp run -S data=folder -S data.videos=...` as the README writes it (no data.root): a
    folder of videos outside the repository is extracted and mined."""
    path, env = repo
    videos = tmp_path / "my videos"
    shutil.copytree(path / "data/world/videos", videos)
    _run(["dvc", "exp", "run", "-S", "scale=smoke", "-S", "data=folder", "-S", f"data.videos={videos}", "mine_pairs"],
         path, env)
    params = yaml.safe_load((path / "params.yaml").read_text())
    assert params["data"] == {"source": "folder", "root": "data/world", "videos": str(videos)}
    manifest = pd.read_parquet(path / "data/frames/manifest.parquet")
    assert manifest["video"].nunique() == params["world"]["videos"]["count"]
    assert len(pd.read_parquet(path / "data/pairs/pairs.parquet")) > 0
    _run(["dvc", "exp", "run", "-S", "scale=smoke", "mine_pairs"], path, env)  # back to the world's videos


def test_a_variant_added_by_one_line_gets_stages_curves_and_metrics(repo):
    """One -S line adds a variant: it trains and is evaluated, its curve joins the overlaid training
    curves in `dvc plots show`, its metrics are in `dvc metrics show`, and the report gates it."""
    path, env = repo
    line = "+variants.moco_extra={method:moco,positives:images,data:data/world/corpora/scene_crops}"
    proc = _run(["dvc", "exp", "run", "-S", "scale=smoke", "-S", line], path, env)
    assert {"pretrain@moco_extra", "evaluate@moco_extra", TRAINING_SUMMARY, "report"} <= set(_stages_run(proc))
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], path, env).stdout)
    loss = plots["data"]["results/summary/training/loss.csv"][0]["content"]["data"]["values"]
    assert {"moco_extra", "moco_tracker", "supervised"} <= {row["variant"] for row in loss}
    metrics = _run(["dvc", "metrics", "show", "--json"], path, env).stdout
    assert "results/pretrain/moco_extra/metrics.json" in metrics
    assert "gate.moco_extra.learned" in json.loads((path / "reports/metrics.json").read_text())
    _run(["dvc", "exp", "run", "-S", "scale=smoke"], path, env)  # back: the variant's stages are gone


def test_a_backbone_is_fetched_from_another_repository_through_a_remote(repo, tmp_path):
    """The remote recipe: `dvc push` to a remote, commit; then `dvc get REPO models/V/backbone.pt`
    from anywhere fetches the very bytes."""
    path, env = repo
    remote = tmp_path / "remote"
    _run(["dvc", "remote", "add", "-d", "storage", str(remote)], path, env)
    _run(["dvc", "push"], path, env)
    _run(["git", "add", "-A"], path, env)
    _run(["git", "commit", "-qm", "results and a remote"], path, env)
    got = tmp_path / "elsewhere"
    got.mkdir()
    _run(["dvc", "get", str(path), "models/moco_tracker/backbone.pt", "-o", "backbone.pt"], got, env)
    assert (got / "backbone.pt").read_bytes() == (path / "models/moco_tracker/backbone.pt").read_bytes()

def test_pr_report_shows_only_what_the_change_caused(repo):
    """`make pr-report`'s module: base and head reproduced in worktrees on the shared cache. A
    change of a report param reruns only the report; pretraining and evaluation come back from the
    run-cache with the base's bytes, so the comment lists no change there, and the param itself."""
    path, env = repo
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    _run(["git", "add", "-A"], path, env)  # earlier tests left results and params: the base
    _run([*git, "commit", "-qm", "base", "--allow-empty"], path, env)
    base = _run(["git", "rev-parse", "HEAD"], path, env).stdout.strip()
    conf = path / "conf/config.yaml"
    text = conf.read_text()
    assert "  resamples: 2000 " in text
    conf.write_text(text.replace("  resamples: 2000 ", "  resamples: 1000 "))
    _run([*git, "commit", "-qam", "head: fewer bootstrap draws"], path, env)
    status = _run(["git", "status", "--porcelain"], path, env).stdout

    proc = _run([sys.executable, "-m", "demystify.report.pr_comment", "--base", base, "--out", "reports/pr.md"],
                path, env)
    comment = (path / "reports/pr.md").read_text()
    assert proc.stdout == comment
    sections = dict(part.split("\n", 1) for part in comment.split("\n#### ")[1:])
    assert sections["Pretraining"].strip() == "no change" and sections["Evaluation"].strip() == "no change"
    assert sections["Data"].strip() == "no change"
    assert "| report.resamples | 2000 | 1000 |" in comment
    params = comment.split("### Params that changed")[1].split("###")[0]
    assert params.count("\n| ") == 2, params  # the header row and report.resamples, nothing else
    assert "- Claim 1" in comment  # the head's verdicts
    # the head reran only the report; everything else came back from the run-cache
    head = next(line for line in comment.splitlines() if line.startswith("- head"))
    assert "1 stages run (report)" in head, head
    # the worktrees are gone and the workspace untouched
    worktrees = _run(["git", "worktree", "list", "--porcelain"], path, env).stdout
    assert worktrees.count("worktree ") == 1 and not (path / ".pr").exists()
    assert _run(["git", "status", "--porcelain"], path, env).stdout == status
