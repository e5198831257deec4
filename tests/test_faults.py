"""Faults that used to end in a silent wrong result: a damaged resumable checkpoint, NaN in JSON
outputs, and a stage process that outlived the killed DVC process and overwrote a rerun's outputs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from test_pretrain import _checkpoints, _copy_workspace, _outputs, _run, straight, workspace  # noqa: F401

from demystify import backbone as bb
from demystify.core import stage_process
from demystify.core.io import write_json
from demystify.ssl import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


def _damage(path: Path) -> None:
    """4 KiB of other bytes in the middle of the file, as a bad sector or a torn copy leaves it."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes((b + 1) % 256 for b in data[middle : middle + 4096])
    path.write_bytes(data)


# --- checkpoints -------------------------------------------------------------------------------


def test_a_damaged_or_unverifiable_checkpoint_is_refused_by_name(tmp_path):
    """torch.load does not check the zip's CRCs: a checkpoint with 4 KiB overwritten used to load."""
    net = torchvision.models.resnet18()
    path = tmp_path / "ckpt.pt"
    ckpt.save(path, {"model": net.state_dict(), "step": 3, "fingerprint": "k"})
    assert ckpt.load(path, "k")["step"] == 3
    _damage(path)
    with pytest.raises(bb.CheckpointError, match=r"ckpt\.pt: (damaged|not a loadable checkpoint)"):
        ckpt.load(path, "k")
    old = tmp_path / "old.pt"
    torch.save(
        {"model": net.state_dict(), "step": 3, "fingerprint": "k"}, old
    )  # an older release's format
    with pytest.raises(
        bb.CheckpointError, match=r"old\.pt: holds no checksum .* cannot be verified"
    ):
        ckpt.load(old, "k")


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_a_damaged_checkpoint_is_set_aside_and_the_run_starts_afresh(workspace, straight, tmp_path):  # noqa: F811
    """A real checkpoint of a killed run, damaged: the rerun names it, moves it to *.damaged, trains
    from step 0 and ends with the uninterrupted run's outputs (was: resumed, NaN, exit 0)."""
    root = _copy_workspace(workspace, tmp_path / "ws")
    (root / "machine.yaml").write_text(
        "pretrain: {checkpoint_every: 2}\n"
    )  # read from the stage's folder
    killed = _run(root, "moco_object_centric", env={"DEMYSTIFY_KILL_AT": "step:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (checkpoint,) = _checkpoints(root, "moco_object_centric")
    assert ckpt.load(checkpoint)["step"] == 2
    _damage(checkpoint)
    rerun = _run(root, "moco_object_centric")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    named = checkpoint.relative_to(root)
    assert f"pretrain@moco_object_centric: not resuming: {named}: damaged" in rerun.stderr, (
        rerun.stderr[-3000:]
    )
    assert f"moved it to {named}.damaged and starting from step 0" in rerun.stderr
    assert "resuming at step" not in rerun.stderr and "Traceback" not in rerun.stderr
    assert (
        Path(f"{checkpoint}.damaged").is_file() and _checkpoints(root, "moco_object_centric") == []
    )
    assert _outputs(root, "moco_object_centric") == _outputs(straight, "moco_object_centric")


@pytest.mark.e2e  # trains through the stage in processes of its own: make test only
def test_a_backbone_of_non_finite_weights_is_never_exported(workspace, tmp_path):  # noqa: F811
    """An external checkpoint holding NaN: the stage names the count of non-finite tensors, exits 1
    and exports nothing; a finite state passes unchanged."""
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    state = net.state_dict()
    assert bb.require_finite(state, "x") is state
    for key in ("conv1.weight", "layer1.0.bn1.running_var"):
        state[key] = torch.full_like(state[key], math.nan)
    root = _copy_workspace(workspace, tmp_path / "ws")
    torch.save(state, tmp_path / "nan.pt")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["variants"]["nan_external"] = {
        "method": "external",
        "positives": "none",
        "data": str(tmp_path / "nan.pt"),
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _run(root, "nan_external")
    assert proc.returncode == 1, proc.stderr[-2000:]
    floats = sum(1 for v in state.values() if v.is_floating_point())
    assert (
        f"nan.pt: 2 of {floats} tensors hold NaN or infinite values (first: conv1.weight)"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr and not (root / "models" / "nan_external").exists()


# --- JSON --------------------------------------------------------------------------------------


def test_json_outputs_never_hold_nan(tmp_path, capsys):
    path = tmp_path / "summary.json"
    write_json(
        path, {"loss": math.nan, "curve": [1.0, math.inf, -math.inf], "steps": 8, "name": "NaN"}
    )
    text = path.read_text()
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "curve": [1.0, None, None], "steps": 8, "name": "NaN"}
    assert (
        f"{path}: non-finite values written as null at loss, curve[1], curve[2]"
        in capsys.readouterr().err
    )
    write_json(path, {"loss": 0.5})  # finite values as before, nothing said
    assert json.loads(path.read_text()) == {"loss": 0.5} and capsys.readouterr().err == ""


# --- stage processes ---------------------------------------------------------------------------


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DVC_NO_ANALYTICS": "1", **extra}


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in "ZX"


def _wait_for(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


SLOW_STAGE = textwrap.dedent("""
    import os, subprocess, sys, time
    from demystify.core import stage_process

    stage_process.guard()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120); open('child.txt', 'w').write('late')"])
    with open("pids.tmp", "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    os.replace("pids.tmp", "pids")
    time.sleep(120)
    open("out.txt", "w").write("an orphan's result")
""")


@pytest.mark.parametrize(
    "cmd",
    ["{python} stage.py", "{python} stage.py && echo done"],
    ids=["shell-execs-python", "shell-waits"],
)
def test_killing_dvc_kills_the_stage_and_its_children(tmp_path, cmd):
    """`kill -9` of `dvc repro` mid-stage: the stage (whether its parent is the shell or DVC) and
    its child are gone at once and never write their outputs (was: they ran on as orphans and
    overwrote a rerun's outputs minutes later)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "t"],
        [sys.executable, "-m", "dvc", "init", "-q"],
    ):
        subprocess.run(args, cwd=repo, env=_env(), check=True, capture_output=True)
    (repo / "stage.py").write_text(SLOW_STAGE)
    (repo / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "slow": {
                        "cmd": cmd.format(python=sys.executable),
                        "deps": ["stage.py"],
                        "outs": ["out.txt"],
                    }
                }
            }
        )
    )
    dvc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=repo,
        env=_env(SHELL="/bin/bash"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids: list[int] = []
    try:
        assert _wait_for(lambda: (repo / "pids").exists() or dvc.poll() is not None, 180), (
            "the stage never started"
        )
        assert dvc.poll() is None, dvc.stdout.read()
        pids = [int(p) for p in (repo / "pids").read_text().split()]
        dvc.kill()
        dvc.wait()
        assert _wait_for(lambda: all(_gone(p) for p in pids), 30), (
            "the stage outlived the killed DVC"
        )
        assert not (repo / "out.txt").exists() and not (repo / "child.txt").exists()
        assert (repo / "stage.py").read_text() == SLOW_STAGE  # its inputs untouched
    finally:
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        if dvc.poll() is None:
            dvc.kill()


HOLDER = textwrap.dedent("""
    import sys, time
    from demystify.core import stage_process

    stage_process.guard()
    print("holding", flush=True)
    time.sleep(120)
""")


def test_a_stage_still_running_refuses_a_second_run_of_it_by_name(tmp_path):
    """Two processes of one stage (as a rerun beside a straggler would be): the second exits 1
    naming the first's pid; another stage, or another rank of a torchrun, is not refused; once the
    first is gone the stage runs again."""
    (tmp_path / ".dvc").mkdir()
    stage = "pretrain@moco_object_centric"
    (tmp_path / "machine.yaml").write_text(
        "stages: {wait_for_cores: false}\n"
    )  # the stage lock alone
    env = _env(
        DVC_STAGE=stage, DVC_ROOT=str(tmp_path), DEMYSTIFY_MACHINE=str(tmp_path / "machine.yaml")
    )
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout.readline().strip() == "holding"
        second = subprocess.run(
            [sys.executable, "-c", HOLDER.replace("120", "0")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1 and "holding" not in second.stdout
        assert f"stage {stage} is still running as pid {first.pid}" in second.stderr, second.stderr
        others = [
            {**env, "DVC_STAGE": "pretrain@supervised"},
            {**env, "WORLD_SIZE": "2", "RANK": "1"},
        ]
        for other in others:
            ran = subprocess.run(
                [sys.executable, "-c", HOLDER.replace("120", "0")],
                env=other,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert ran.returncode == 0 and "holding" in ran.stdout, ran.stderr
    finally:
        first.kill()
        first.wait()
    again = subprocess.run(
        [sys.executable, "-c", HOLDER.replace("120", "0")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "holding" in again.stdout, again.stderr


def test_outside_dvc_the_guard_does_nothing(monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    stage_process.guard()
    assert stage_process._held == {}
