"""A temporary copy of the repository as a git + DVC repo at the smoke scale, and helpers to run
and read DVC in it: shared by the end-to-end modules (test_pipeline, test_recipes)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from demystify.tools.params_file import compose
from demystify.tools.repo_copy import copy_project, dvc_env

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = list(
    yaml.safe_load((ROOT / "params.yaml").read_text())["variants"]
)  # whatever params declares
VARIANT_DATA = {
    v: s["data"] for v, s in yaml.safe_load((ROOT / "params.yaml").read_text())["variants"].items()
}
PAIR_VARIANTS = sorted(v for v, data in VARIANT_DATA.items() if data == "data/pairs/pairs.parquet")


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def make_repo(dest: Path) -> tuple[Path, dict]:
    """A git repo at `dest` holding the project's files (tracked and new, not ignored), smoke params."""
    copy_project(ROOT, dest)
    compose(dest / "params.yaml", ["scale=smoke"], config_dir=dest / "conf")
    env = dvc_env(dest, OMP_NUM_THREADS="1")  # two test workers on two cores: more threads contend
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "config", "user.name", "test"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
        ["dvc", "config", "--local", "core.site_cache_dir", str(dest / ".dvc" / "site_cache")],
    ):
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
    return {
        v: hashlib.md5((path / "models" / v / "backbone.pt").read_bytes()).hexdigest()
        for v in VARIANTS
    }
