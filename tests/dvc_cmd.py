"""A stage's command as dvc.yaml writes it, ${...} filled from a params file, for tests that run a
stage script by hand: they call it exactly as `dvc repro` would."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage_argv(
    stage: str, params_path: str | Path, key: str | None = None, root: Path = ROOT
) -> list[str]:
    """argv of `stage` (for a foreach stage, its entry `key`) in the repository `root`, with this
    interpreter for `python`."""
    body = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]
    params = yaml.safe_load(Path(params_path).read_text())
    cmd = body.get("do", body)["cmd"]

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name in ("key", "item") and name not in params:
            return key  # a foreach over a list (extract_frames' shards): the entry is the item
        if name.startswith("item.") and key not in params["variants"]:
            return "-"  # a variant params.yaml lacks: the script itself must say so
        node = params["variants"][key] if name.startswith("item.") else params
        for part in name.removeprefix("item.").split("."):
            node = node[part]
        return str(node)

    words = shlex.split(re.sub(r"\$\{([^}]+)\}", value, cmd))
    return [sys.executable if words[0] == "python" else words[0], str(root / words[1]), *words[2:]]


def extract_frames_by_hand(cwd: Path) -> subprocess.CompletedProcess[str]:
    """stages/extract_frames.py run in `cwd` on its videos/ folder with no shard list (its own
    params.yaml and machine.yaml there), by this interpreter with the repository's src on PYTHONPATH:
    the exit status and output, as text."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "extract_frames.py"),
            "--videos",
            "videos",
            "--out",
            "data/frames",
            "--metrics",
            "results/frames/metrics.json",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
