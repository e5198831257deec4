"""machine.yaml: machine settings (workers, resident memory, checkpoint frequency) outside every
stage's params, validated by name; an old params.yaml naming one is told where it went. That
changing them leaves `dvc status` clean is asked of DVC in test_pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_cmd import extract_frames_by_hand

from demystify import machine
from demystify.core import config

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_file_is_the_defaults_and_auto_follows_the_cpu_set():
    committed = machine.load(ROOT / "machine.yaml")
    assert committed == machine.parse({}, "none")  # a missing file or key: the committed values
    cpus = len(os.sched_getaffinity(0))
    assert committed.frames_workers == committed.pairs_workers == cpus
    assert (committed.pretrain_workers, committed.resident_mb, committed.checkpoint_every) == (
        2,
        4096,
        50,
    )
    loader = machine.parse({"pretrain": {"workers": "auto", "resident_mb": "auto"}}, "m.yaml")
    assert loader.pretrain_workers == min(machine.LOADER_AUTO_MAX, cpus - 1)
    assert loader.resident_mb == config.memory_bytes() // 2 // 2**20 > 0
    assert loader.checkpoint_every == 50  # the keys not given keep their defaults


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "pretrain: {workers: -1}",
            r"m\.yaml: pretrain\.workers = -1: expected an integer >= 0 or auto",
        ),
        ("frames: {workers: 0}", r"m\.yaml: frames\.workers = 0: expected an integer >= 1 or auto"),
        (
            "pretrain: {checkpoint_every: auto}",
            r"m\.yaml: pretrain\.checkpoint_every = 'auto': expected an integer >= 1$",
        ),
        (
            "pretrain: {resident_mb: '4096'}",
            r"m\.yaml: pretrain\.resident_mb = '4096': expected an integer",
        ),
        ("pretrain: {workers: true}", r"m\.yaml: pretrain\.workers = True: expected"),
        (
            "pretrain: {worker: 2}",
            r"m\.yaml: pretrain\.worker: unknown key \(known: workers, resident_mb",
        ),
        ("pretrian: {workers: 2}", r"m\.yaml: unknown section\(s\) pretrian"),
        ("pretrain: 2", r"m\.yaml: pretrain = 2: expected a mapping"),
        ("[1, 2]", r"m\.yaml: expected a mapping at the top level"),
        ("pretrain: {workers: 2", r"m\.yaml: not valid YAML"),
    ],
)
def test_a_bad_value_names_the_file_and_the_key(tmp_path, text, expected):
    (tmp_path / "m.yaml").write_text(text + "\n")
    with pytest.raises(machine.MachineError, match=expected):
        machine.load(tmp_path / "m.yaml")
    assert isinstance(
        machine.MachineError("x"), config.ConfigError
    )  # every stage reports it as a params error


def test_the_environment_names_another_file_which_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert machine.load() == machine.parse({}, "none")  # no machine.yaml here: the defaults
    (tmp_path / "machine.yaml").write_text("pretrain: {checkpoint_every: 7}\n")
    assert machine.load().checkpoint_every == 7
    (tmp_path / "node.yaml").write_text("pretrain: {checkpoint_every: 9}\nframes: {workers: 3}\n")
    monkeypatch.setenv(machine.ENV, str(tmp_path / "node.yaml"))
    node = machine.load()
    assert (node.checkpoint_every, node.frames_workers) == (9, 3)
    monkeypatch.setenv(machine.ENV, str(tmp_path / "gone.yaml"))
    with pytest.raises(
        machine.MachineError, match=r"gone\.yaml: file not found \(named by \$DEMYSTIFY_MACHINE\)"
    ):
        machine.load()


def test_an_old_params_key_says_it_moved_to_machine_yaml():
    data = config.read_yaml(ROOT / "params.yaml")
    assert not {k.split(".")[1] for k in config.MOVED_TO_MACHINE} & {
        k
        for name in ("frames", "pairs", "pretrain", "invariance", "classification", "segmentation")
        for k in data[name]
    }
    config.validate(data, "pretrain", "frames")  # the committed params pass
    data["pretrain"]["workers"] = 12
    data["frames"]["workers"] = 4
    with pytest.raises(config.ConfigError) as err:
        config.validate(data, "pretrain")
    lines = str(err.value).splitlines()
    assert lines[0] == "params.yaml: invalid parameters:"
    assert (
        "frames.workers = 4: frames.workers moved to machine.yaml (changes speed, never results"
        in lines[1]
    )
    assert "pretrain.workers = 12: pretrain.workers moved to machine.yaml" in lines[2]
    data["pretrain"]["wrokers"] = 1  # another unknown key keeps the plain message
    with pytest.raises(
        config.ConfigError, match=r"pretrain\.wrokers = 1: unknown key \(not in the schema"
    ):
        config.validate(data, "pretrain")


def test_a_stage_stops_on_a_bad_machine_file_with_one_line(tmp_path):
    """extract_frames as DVC runs it, with a bad machine.yaml in its folder: exit 1, one line naming
    the file and the key, nothing written."""
    (tmp_path / "videos").mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"data": {**params["data"], "videos": "videos"}, "frames": params["frames"]})
    )
    (tmp_path / "machine.yaml").write_text("frames: {workers: lots}\n")
    proc = extract_frames_by_hand(tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "extract_frames: machine.yaml: frames.workers = 'lots': expected an integer >= 1 or auto"
    ]
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_a_stage_waits_for_cores_another_stage_holds(tmp_path):
    """Slots are per core: a process holding both of 2 makes the next stage wait, saying so, until it
    ends, then the waiting one takes them; one thread's worth fits beside another's. Processes of a
    torchrun run never wait."""
    from demystify import cores

    env = {**os.environ, "DEMYSTIFY_CORES_DIR": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    claim = (
        "import sys; from demystify import cores; cores.claim(sys.argv[1], 2, 2); "
        "print('held', flush=True); sys.stdin.readline()"
    )

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", claim, name],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    held = []
    holder = start("holder")
    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = start("stage@x")
        assert "stage@x: waiting for 2 of 2 cores" in waiter.stderr.readline()
        assert cores._try_take(tmp_path, 2, 1) == []  # none free
        holder.communicate("\n", timeout=30)  # the holder ends; its slots free with it
        assert (
            waiter.stdout.readline().strip() == "held"
            and "took 2 core(s)" in waiter.stderr.readline()
        )
        waiter.communicate("\n", timeout=30)
        held = cores._try_take(tmp_path, 2, 1) + cores._try_take(tmp_path, 2, 1)
        assert len(held) == 2  # one thread's worth each: both fit
    finally:
        holder.kill()
        for fd in held:
            os.close(fd)
    os.environ["WORLD_SIZE"] = "2"
    try:
        assert cores.claim("rank", 2, 2) == 0  # a torchrun rank takes no slot
    finally:
        del os.environ["WORLD_SIZE"]
