"""The recipes of the README and docs/howto.md, run as written in a temporary copy of the repository
(smoke scale; one repository for the module, its tests in order): a variant added by one line (the
first run of the whole pipeline), a sweep restored from the run-cache, your own videos, a backbone
fetched through a remote, a pull-request report."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pandas as pd
import pytest
import yaml
from dvc_repo import _backbones, _run, _stages_cached, _stages_run, make_repo

from demystify.core.frames_store import read_manifest

pytestmark = pytest.mark.e2e  # a whole DVC repository reproduced


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Not reproduced here: the first test's `dvc exp run` runs the whole pipeline (once, not twice)."""
    return make_repo(tmp_path_factory.mktemp("recipes"))


TRAINING_SUMMARY = "summarize_training"


def test_a_variant_added_by_one_line_gets_stages_curves_and_metrics(repo):
    """One -S line adds a variant (and, first in this module, reproduces everything else): it trains
    and is evaluated, its curve joins the overlaid training curves in `dvc plots show`, its metrics
    are in `dvc metrics show`, and the report gates it."""
    path, env = repo
    line = "+variants.moco_extra={method:moco,positives:images,data:data/world/corpora/scene_crops}"
    proc = _run(["dvc", "exp", "run", "-S", "scale=smoke", "-S", line], path, env)
    assert {
        "pretrain@moco_extra",
        "evaluate_invariance@moco_extra",
        "evaluate_classification@moco_extra",
        "evaluate_segmentation@moco_extra",
        TRAINING_SUMMARY,
        "report",
    } <= set(_stages_run(proc))
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], path, env).stdout)
    loss = plots["data"]["results/summary/training/loss.csv"][0]["content"]["data"]["values"]
    assert {"moco_extra", "moco_tracker", "supervised"} <= {row["variant"] for row in loss}
    metrics = _run(["dvc", "metrics", "show", "--json"], path, env).stdout
    assert "results/pretrain/moco_extra/metrics.json" in metrics
    assert "gate.moco_extra.learned" in json.loads((path / "reports/metrics.json").read_text())


def test_sweep_value_seen_before_is_restored_not_retrained(repo):
    """A sweep over pretrain.lr through `dvc exp run -S` (Hydra composes conf/ into params.yaml),
    then the first value again: DVC restores the training stage from its run-cache (the log says
    so) with the first run's very bytes."""
    path, env = repo
    target = "pretrain@moco_object_centric"
    runs = {}
    for lr in ("0.03", "0.1", "0.03"):
        proc = _run(
            ["dvc", "exp", "run", "-S", "scale=smoke", "-S", f"pretrain.lr={lr}", target], path, env
        )
        runs.setdefault(lr, []).append((proc, _backbones(path)["moco_object_centric"]))
        params = yaml.safe_load(
            (path / "params.yaml").read_text()
        )  # composed: the smoke scale, the override
        assert params["pretrain"]["lr"] == float(lr) and params["world"]["image_size"] == 32
        assert params["pairs"]["source"] == "tracker" and params["classification"]["knn"]["k"] == 3
    (first, first_model), (again, again_model) = runs["0.03"]
    ((_, other_model),) = runs["0.1"]
    assert _stages_run(first) == [target] and first_model != other_model
    assert (
        _stages_run(again) == [] and target in _stages_cached(again) and again_model == first_model
    )
    assert '"lr":0.1' in _run(["dvc", "exp", "show", "--json"], path, env).stdout.replace(
        " ", ""
    )  # the sweep listed


def test_readme_recipe_own_videos_with_data_folder(repo, tmp_path):
    """`dvc exp run -S data=folder -S data.videos=...` as the README writes it (no data.root): a
    folder of videos outside the repository is extracted and mined."""
    path, env = repo
    videos = tmp_path / "my videos"
    shutil.copytree(path / "data/world/videos", videos)
    _run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "scale=smoke",
            "-S",
            "data=folder",
            "-S",
            f"data.videos={videos}",
            "mine_pairs",
        ],
        path,
        env,
    )
    params = yaml.safe_load((path / "params.yaml").read_text())
    assert params["data"] == {"source": "folder", "root": "data/world", "videos": str(videos)}
    manifest = read_manifest(path / "data/frames")  # every shard's
    assert manifest["video"].nunique() == params["world"]["videos"]["count"]
    assert len(pd.read_parquet(path / "data/pairs/pairs.parquet")) > 0
    _run(
        ["dvc", "exp", "run", "-S", "scale=smoke", "mine_pairs"], path, env
    )  # back to the world's videos


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
    _run(
        ["dvc", "get", str(path), "models/moco_tracker/backbone.pt", "-o", "backbone.pt"], got, env
    )
    assert (got / "backbone.pt").read_bytes() == (
        path / "models/moco_tracker/backbone.pt"
    ).read_bytes()


def test_pr_report_shows_only_what_the_change_caused(repo):
    """`make pr-report`'s module: base and head reproduced in worktrees on the shared cache. A
    change of a report param (the gate's margin) reruns only the report; pretraining and evaluation come back from the
    run-cache with the base's bytes, so the comment lists no change there, and the param itself."""
    path, env = repo
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    # `make run` as the README has it, moco_extra (the first test's) dropped by the later runs: its
    # folders deleted, then everything reproduced and committed: the base
    _run([sys.executable, "-m", "demystify.tools.leftovers"], path, env)
    _run(["dvc", "repro"], path, env)
    _run(["git", "add", "-A"], path, env)
    _run([*git, "commit", "-qm", "base", "--allow-empty"], path, env)
    base = _run(["git", "rev-parse", "HEAD"], path, env).stdout.strip()
    conf = path / "conf/config.yaml"
    text = conf.read_text()
    assert "  gate_margin: 0.05 " in text  # a report param the smoke scale does not override
    conf.write_text(text.replace("  gate_margin: 0.05 ", "  gate_margin: 0.04 "))
    _run([*git, "commit", "-qam", "head: a lower learning-gate margin"], path, env)
    status = _run(["git", "status", "--porcelain"], path, env).stdout

    proc = _run(
        [
            sys.executable,
            "-m",
            "demystify.tools.pr_comment",
            "--base",
            base,
            "--out",
            "reports/pr.md",
        ],
        path,
        env,
    )
    comment = (path / "reports/pr.md").read_text()
    assert proc.stdout == comment
    sections = dict(part.split("\n", 1) for part in comment.split("\n#### ")[1:])
    assert (
        sections["Pretraining"].strip() == "no change"
        and sections["Evaluation"].strip() == "no change"
    )
    assert sections["Data"].strip() == "no change"
    assert "| report.gate_margin | 0.05 | 0.04 |" in comment
    params = comment.split("### Params that changed")[1].split("###")[0]
    assert params.count("\n| ") == 2, params  # the header row and report.gate_margin, nothing else
    assert "- Claim 1" in comment  # the head's verdicts
    # the head reran only the report and the two moments that follow any change to it or to
    # params.yaml (the copy of the report into git, the whole-file params check, neither cacheable:
    # one has an uncached output, the other none); everything else came back from the run-cache
    head = next(line for line in comment.splitlines() if line.startswith("- head"))
    ran = re.search(r"\d+ stages run(?: \(([^)]*)\))?", head).group(1)
    assert set(ran.split(", ")) == {"report", "publish_report", "check_params"}, head
    # and the base, a fresh worktree of what the workspace reproduced, reran nothing: DVC's
    # .gitignore lines for moco_extra and its deleted folders change no dependency's hash
    base_line = next(line for line in comment.splitlines() if line.startswith("- base"))
    ran = re.search(r"\d+ stages run(?: \(([^)]*)\))?", base_line).group(1)  # "N stages run (a, b)"
    assert set(ran.split(", ") if ran else []) <= {"publish_report"}, (
        base_line
    )  # a copy, never run-cached
    # the worktrees are gone and the workspace untouched
    worktrees = _run(["git", "worktree", "list", "--porcelain"], path, env).stdout
    assert worktrees.count("worktree ") == 1 and not (path / ".pr").exists()
    assert _run(["git", "status", "--porcelain"], path, env).stdout == status


# what sweep-table reads: the foreach stage's summarize@invariance, @classification, @segmentation
SUMMARIES = ["summarize"]


def test_queued_seed_sweep_counted_right(repo):
    """docs/howto.md's seed sweep at the smoke scale, as written: the workspace at the sweep's setting,
    `dvc exp run --queue -S scale=smoke -S 'pretrain.seed=0,1' <the summaries>`, `dvc exp run
    --run-all`, `make sweep-table`, `dvc repro`. Two seeds are two runs: the queued seed 0 is the
    workspace's run; the table holds seed 1 alone, read from its experiment's own summary files (no
    dvclive metric), and each seed interval is Student's t over 2 runs (1 degree of freedom)."""
    from scipy import stats

    path, env = repo
    _run(["dvc", "exp", "run", "-S", "scale=smoke"], path, env)  # the workspace's run (seed 0)
    # committed, DVC's .gitignore files with it, as a clone has them: without models/.gitignore a
    # queued experiment commits the backbones into git (45 MB each), minutes of packing
    _run(["git", "add", "-A"], path, env)
    _run(["git", "commit", "-qm", "the workspace's run"], path, env)
    workspace = {
        k: json.loads((path / f"results/summary/{k}/metrics.json").read_text())
        for k in ("invariance", "classification", "segmentation")
    }
    _run(
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-S",
            "scale=smoke",
            "-S",
            "pretrain.seed=0,1",
            *SUMMARIES,
        ],
        path,
        env,
    )
    _run(["dvc", "exp", "run", "--run-all"], path, env)
    (path / ".venv").mkdir(exist_ok=True)
    (path / ".venv/.installed").touch()  # `make install` done: the tests' interpreter is on PATH
    table_proc = _run(["make", "sweep-table"], path, env)
    assert "2 runs, each counted once: the workspace and pretrain.seed=1 (" in table_proc.stderr, (
        table_proc.stderr
    )
    assert "the workspace's seeds: the workspace's run, counted once" in table_proc.stderr

    table = pd.read_csv(path / "results/sweep/runs.csv")
    assert set(table["run"]) == {"pretrain.seed=1"}
    assert set(table["kind"]) == {"invariance", "classification", "segmentation"}
    assert not table["metric"].str.contains("/").any() and "loss" not in set(table["metric"])
    seed1 = {}
    for rev in _run(
        ["git", "for-each-ref", "--format=%(objectname)", "refs/exps"], path, env
    ).stdout.split():
        params = yaml.safe_load(_run(["git", "show", f"{rev}:params.yaml"], path, env).stdout)
        if params["pretrain"]["seed"] == 1:
            seed1 = json.loads(
                _run(
                    ["git", "show", f"{rev}:results/summary/classification/metrics.json"], path, env
                ).stdout
            )
    knn = table[(table["kind"] == "classification") & (table["metric"] == "knn_top1")]
    assert {r.model: r.value for r in knn.itertuples()} == {
        m: v["all"]["knn_top1"] for m, v in seed1.items()
    }
    assert len(table) == sum(
        len(per_key)
        for per_model in workspace.values()
        for per_set in per_model.values()
        for per_key in per_set.values()
    )  # every summary value, once

    _run(["dvc", "repro"], path, env)  # the report, now over the seeds
    for kind, values in workspace.items():  # the workspace's own run untouched
        assert json.loads((path / f"results/summary/{kind}/metrics.json").read_text()) == values
    metrics = json.loads((path / "reports/metrics.json").read_text())
    assert metrics["runs"] == 2
    assert "with the 2 runs of a seed sweep" in (path / "reports/report.md").read_text()
    swept = {(r.kind, r.model, r.set, r.metric): r.value for r in table.itertuples()}
    checked = 0
    for name in (k.removesuffix(".seeds_low") for k in metrics if k.endswith(".seeds_low")):
        claim, pair, set_name, key = name.split(".")
        better, worse = pair.split("_vs_")
        kinds = [k for k, m, s, kk in swept if (m, s, kk) == (better, set_name, key)]
        if not kinds or kinds[0] == "invariance":
            continue  # a mean over invariance sets
        kind = kinds[0]
        d = [
            workspace[kind][better][set_name][key] - workspace[kind][worse][set_name][key],
            swept[kind, better, set_name, key] - swept[kind, worse, set_name, key],
        ]
        half = stats.t.ppf(0.975, 1) * abs(d[0] - d[1]) / 2  # sd of two / sqrt(2)
        assert metrics[name + ".seeds_low"] == pytest.approx(sum(d) / 2 - half, abs=2e-6), name
        assert metrics[name + ".seeds_high"] == pytest.approx(sum(d) / 2 + half, abs=2e-6), name
        checked += half > 0
    assert checked, "no comparison with a spread over the two seeds"
