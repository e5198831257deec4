"""dvc.yaml is the one place the pipeline is wired: every project module a stage's script
imports (transitively, including imports inside functions) is among that stage's declared deps,
so a change to any of them reruns the stage instead of leaving a stale output; and every path a
stage reads or writes is named on its `cmd` line and declared, nothing else."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imported_modules(path: Path, package: str) -> set[str]:
    """demystify modules named by any import statement of the file, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "demystify"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "demystify":
                found.add(module)
                found |= {
                    f"{module}.{a.name}" for a in node.names if _module_file(f"{module}.{a.name}")
                }
    return found


def project_files_of(script: Path) -> set[Path]:
    """Every file under src/ that running `script` can import (parent packages included)."""
    seen: set[Path] = set()
    todo = [(script, "stages")]
    while todo:
        path, package = todo.pop()
        for module in _imported_modules(path, package):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:i]))
                if found and found not in seen:
                    seen.add(found)
                    todo.append(
                        (
                            found,
                            ".".join(parts[:i] if found.name == "__init__.py" else parts[: i - 1]),
                        )
                    )
    return seen


def _stages() -> list[tuple[str, str, list[str]]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        out.append((name, body["cmd"].split()[1], deps))
    return out


# read by stages, deliberately no stage's dep: machine settings (machine.yaml, read by machine.py)
# and the wait for free cores (cores.py) change speed, never results, so changing them must rerun nothing
SPEED_ONLY = {SRC / "demystify" / "machine.py", SRC / "demystify" / "cores.py"}


@pytest.mark.parametrize("name, script, deps", _stages(), ids=[s[0] for s in _stages()])
def test_every_module_a_stage_imports_is_a_declared_dep(name, script, deps):
    assert script in deps, f"{name}: its own script {script} is not a dep"
    declared = [ROOT / d for d in deps if "${" not in d]
    missing = sorted(
        str(f.relative_to(ROOT))
        for f in project_files_of(ROOT / script) - SPEED_ONLY
        if not any(f == d or d in f.parents for d in declared)
    )
    assert not missing, (
        f"dvc.yaml stage {name} imports modules it does not declare as deps: {missing}"
    )


def test_machine_settings_are_read_but_no_stage_depends_on_them():
    """machine.yaml (and machine.py, which reads it) is in no stage's deps or params, not even as a
    folder holding it, while the stages that start workers do import it: tuning a machine setting
    leaves `dvc status` clean (test_pipeline asks DVC)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        listed = [
            d if isinstance(d, str) else next(iter(d))
            for d in body.get("deps", []) + body.get("params", [])
        ]
        for entry in listed:
            assert not any(
                _related(entry, m)
                for m in ("machine.yaml", "src/demystify/machine.py", "src/demystify/cores.py")
            ), (name, entry)
            assert entry not in ("src", "src/demystify", "."), (name, entry)
    for script in ("extract_frames", "mine_pairs", "pretrain", "evaluate"):
        assert SPEED_ONLY <= project_files_of(ROOT / "stages" / f"{script}.py"), script
    assert (ROOT / "machine.yaml").is_file()


def test_the_import_scan_sees_imports_inside_functions():
    files = project_files_of(ROOT / "stages" / "pretrain.py")
    assert SRC / "demystify" / "ssl" / "batch_augment.py" in files  # imported inside a method
    assert SRC / "demystify" / "core" / "config.py" in files


def _declared(body: dict) -> list[str]:
    """Every path a stage declares: deps, outs, metrics and plots, and a whole params file
    (`- params.yaml:`, every key of it a param of the stage)."""
    paths = []
    for key in ("deps", "outs", "metrics", "plots"):
        paths += [d if isinstance(d, str) else next(iter(d)) for d in body.get(key, [])]
    paths += [
        next(iter(d))
        for d in body.get("params", [])
        if isinstance(d, dict) and not next(iter(d.values()))
    ]
    return paths


def _related(a: str, b: str) -> bool:
    """The same path, or one inside the other (a folder output and the file in it a stage names)."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _cmd_paths(cmd: str) -> list[str]:
    words = shlex.split(cmd)
    return [words[i + 1] for i, w in enumerate(words) if w.startswith("--") and i + 1 < len(words)]


# a folder on a stage's cmd that is no dep of it: the files it reads there are pinned, by MD5, by
# another dep (extract_frames@K reads the videos plan_shards listed in its shard-K.csv, not the folder)
PINNED = {"extract_frames": {"${data.videos}": "data/shards/shard-${item}.csv"}}


@pytest.mark.parametrize("name", list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]))
def test_every_path_a_stage_reads_or_writes_is_on_its_cmd_line_and_declared(name):
    body = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]
    body = body.get("do", body)
    on_cmd, declared = _cmd_paths(body["cmd"]), _declared(body)
    assert on_cmd, f"{name}: its cmd names no path"
    pinned = PINNED.get(name, {})
    assert all(by in declared and by in on_cmd and path in on_cmd for path, by in pinned.items()), (
        name,
        pinned,
    )
    undeclared = [
        c for c in on_cmd if c not in pinned and not any(_related(c, d) for d in declared)
    ]
    assert not undeclared, f"{name}: cmd paths not declared as deps or outputs: {undeclared}"
    data = [d for d in declared if not d.startswith(("src/", "stages/"))]
    unnamed = [d for d in data if not any(_related(d, c) for c in on_cmd)]
    assert not unnamed, f"{name}: declared paths the cmd does not hand to the script: {unnamed}"


def test_each_evaluation_reads_only_its_own_params_section():
    """One stage per evaluation and model: `-S classification.knn.k=50` makes the classification
    stages out of date, not invariance or segmentation (test_pipeline asks `dvc status`), and no
    evaluation folder is written by two stages."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    kinds = ("invariance", "classification", "segmentation")
    assert "evaluate" not in stages
    for kind in kinds:
        body = stages[f"evaluate_{kind}"]["do"]
        assert kind in body["params"] and not (set(kinds) - {kind}) & set(body["params"]), body[
            "params"
        ]
        assert body["outs"] == [f"results/{kind}/${{key}}"]
        assert body["cmd"].split()[2] == kind  # stages/evaluate.py KIND MODEL
