"""A copy of the project in another folder, to run `dvc repro` apart from the working tree: the
end-to-end tests (tests/dvc_repo.py) and the pipeline benchmarks (bench/pipeline.py) make theirs
with it. The copy holds the files git tracks or would track (not ignored) and no pipeline output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def is_output(rel: str) -> bool:
    """A pipeline output (left behind), not an input: the sweep table is the report's input."""
    return (
        rel.startswith(("data/", "results/", "reports/", "models/"))
        and not rel.startswith("results/sweep/")
    ) or rel == "dvc.lock"


def copy_project(root: Path, dest: Path) -> None:
    """The files of the git checkout `root` (tracked and new, not ignored), pipeline outputs left
    out, copied to the same paths under `dest`."""
    listed = subprocess.check_output(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root, text=True
    ).split()
    for rel in listed:
        src = root / rel
        if src.is_file() and not is_output(rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def dvc_env(repo: Path, **extra: str) -> dict[str, str]:
    """This process's environment for dvc and the stages in the copy `repo`: this interpreter's
    folder first on PATH (its dvc and python), the copy's own package on PYTHONPATH, no analytics;
    then `extra`."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo / "src"),
        "DVC_NO_ANALYTICS": "1",
        **extra,
    }
