"""docs/howto.md's model-registry recipe, as written: `dvc artifacts get` of the `backbones` artifact
(dvc.yaml) finds a version only through an annotated `backbones@vX.Y.Z` tag (GTO's form); a
lightweight tag, or none, is not a version. Real git and DVC, in a temporary repository whose
artifact is declared as in this project's dvc.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
}


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert not check or proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_artifacts_get_with_an_annotated_tag(tmp_path):
    repo, here = tmp_path / "repo", tmp_path / "here"
    repo.mkdir(), here.mkdir()
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())[
        "artifacts"
    ]  # the project's own declaration
    assert artifacts["backbones"]["path"] == "models"
    (repo / "make_models.py").write_text(
        "from pathlib import Path\nPath('models/moco_tracker').mkdir(parents=True)\n"
        "Path('models/moco_tracker/backbone.pt').write_bytes(b'weights v1')\n"
    )
    (repo / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "pretrain": {
                        "cmd": "python make_models.py",
                        "deps": ["make_models.py"],
                        "outs": ["models"],
                    }
                },
                "artifacts": artifacts,
            }
        )
    )
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "t"],
        ["dvc", "init", "-q"],
        ["dvc", "repro", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "models"],
    ):
        _run(cmd, repo)

    _run(["git", "tag", "backbones@v0.1.0"], repo)  # lightweight: not a version
    refused = _run(
        ["dvc", "artifacts", "get", str(repo), "backbones", "-o", "light"], here, check=False
    )
    assert refused.returncode != 0 and "Unable to find artifact 'backbones'" in refused.stderr
    assert not (here / "light").exists()

    _run(["git", "tag", "-d", "backbones@v0.1.0"], repo)
    _run(
        ["git", "tag", "-a", "backbones@v0.1.0", "-m", "backbones v0.1.0"], repo
    )  # as docs/howto.md says
    _run(
        ["dvc", "artifacts", "get", str(repo), "backbones"], here
    )  # the latest version, into ./models
    assert (here / "models/moco_tracker/backbone.pt").read_bytes() == b"weights v1"
    _run(
        ["dvc", "artifacts", "get", str(repo), "backbones", "--rev", "v0.1.0", "-o", "pinned"], here
    )
    assert (here / "pinned/moco_tracker/backbone.pt").read_bytes() == b"weights v1"
