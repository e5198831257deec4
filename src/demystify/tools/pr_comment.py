"""A pull-request comment in markdown that shows only what the change caused.

Both revisions, BASE and the committed HEAD (uncommitted changes are not included), are checked
out as detached git worktrees under `.pr/` and reproduced the same way: the smoke scale in fp32,
with DVC's cache (and so its run-cache) shared with this repository. A stage whose code, params
and inputs are equal in both is restored from the run-cache with identical bytes, so any metric,
param or plot that differs is one the change caused. The comment lists only those, grouped by
stage area, with the head's claims and the changed plots (copied beside the comment, for
`cml comment update --publish reports/pr.md`). The worktrees are removed afterwards, also on
failure; the user's workspace is not touched.

    python -m demystify.tools.pr_comment --base main --out reports/pr.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from demystify.core.config import parse_yaml
from demystify.core.io import atomic_path

TREES = Path(".pr")  # gitignored and dvcignored
# the smoke scale, fp32 whatever the revision's smoke.yaml says (a base older than the setting)
SMOKE = ["scale=smoke", "pretrain.precision=fp32"]
AREAS = [  # (heading, path prefixes), in the comment's order
    ("Data", ("results/frames/", "results/pairs/", "results/checks/")),
    ("Pretraining", ("results/pretrain/",)),
    (
        "Evaluation",
        (
            "results/invariance/",
            "results/classification/",
            "results/segmentation/",
            "results/summary/",
        ),
    ),
    ("Report", ("reports/",)),
]


class ReproError(RuntimeError):
    pass


@dataclass
class Tree:
    """One reproduced revision."""

    name: str
    rev: str
    sha: str
    path: Path
    seconds: float = 0.0
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise ReproError(f"`{' '.join(cmd)}` failed in {cwd}:\n{tail}")
    return proc.stdout + proc.stderr


# ---------------------------------------------------------------- worktrees and reproduction


def _remove_tree(root: Path, path: Path) -> None:
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(path)], cwd=root, capture_output=True
    )
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)


@contextlib.contextmanager
def worktrees(root: Path, revs: dict[str, str]) -> Iterator[dict[str, Tree]]:
    """Detached worktrees `.pr/<name>` of each revision, removed on leaving (also on failure)."""
    trees: dict[str, Tree] = {}
    try:
        for name, rev in revs.items():
            sha = _run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], root).strip()
            path = root / TREES / name
            _remove_tree(root, path)  # left over by a killed run
            _run(["git", "worktree", "add", "--detach", "--force", str(path), sha], root)
            trees[name] = Tree(name, rev, sha, path)
        yield trees
    finally:
        for name in revs:
            _remove_tree(root, root / TREES / name)
        with contextlib.suppress(OSError):
            (root / TREES).rmdir()


def reproduce(tree: Tree, cache: Path, site_cache: Path) -> None:
    """Smoke params composed from the revision's conf/, then `dvc repro` on the shared cache, with
    the revision's own code (PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(tree.path / "src"), "DVC_NO_ANALYTICS": "1"}
    _run(["dvc", "config", "--local", "cache.dir", str(cache)], tree.path, env)
    _run(["dvc", "config", "--local", "core.site_cache_dir", str(site_cache)], tree.path, env)
    _run([sys.executable, "-m", "demystify.tools.params_file", *SMOKE], tree.path, env)
    start = time.monotonic()
    log = _run(["dvc", "repro"], tree.path, env)
    tree.seconds = time.monotonic() - start
    tree.ran = [
        line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")
    ]
    tree.cached = [
        line.split("'")[1] for line in log.splitlines() if "is cached - skipping run" in line
    ]


# ---------------------------------------------------------------- what differs


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def metrics(tree: Path) -> dict[tuple[str, str], object]:
    """Every declared metric of a reproduced tree: (file, flattened key) -> value."""
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], tree))
    files = shown.get("", {}).get("data", {})
    return {
        (path, key): value
        for path, entry in files.items()
        for key, value in _flatten(entry.get("data", {})).items()
    }


def params(tree: Path) -> dict[str, object]:
    return _flatten(parse_yaml((tree / "params.yaml").read_text()) or {})


def differences(base: dict, head: dict) -> dict:
    """The keys whose values differ (absent on one side included): key -> (base, head)."""
    missing = object()
    out = {}
    for key in sorted(set(base) | set(head), key=str):
        b, h = base.get(key, missing), head.get(key, missing)
        if b != h:
            out[key] = (None if b is missing else b, None if h is missing else h)
    return out


def _stage_plots(stage: dict) -> list[str]:
    """A stage's plot paths; a `foreach` over a list or dict written out in dvc.yaml, once per entry
    (`${item}` / `${key}` filled in). One over params (`${variants}`) keeps its `${...}`."""
    body = stage.get("do", stage)
    paths = [e if isinstance(e, str) else next(iter(e)) for e in body.get("plots") or []]
    each = stage.get("foreach")
    if isinstance(each, dict):
        return [p.replace("${key}", str(k)) for k in each for p in paths]
    if isinstance(each, list):
        return [p.replace("${item}", str(i)) for i in each for p in paths]
    return paths


def declared_pngs(tree: Path) -> list[str]:
    """reports/*.png and every PNG declared as a plot in dvc.yaml (top level or in a stage)."""
    spec = parse_yaml((tree / "dvc.yaml").read_text()) or {}
    paths = {e if isinstance(e, str) else next(iter(e)) for e in spec.get("plots") or []}
    for stage in (spec.get("stages") or {}).values():
        paths |= set(_stage_plots(stage))
    paths |= {p.relative_to(tree).as_posix() for p in (tree / "reports").glob("*.png")}
    return sorted(p for p in paths if p.endswith(".png") and "${" not in p)


def changed_plots(base: Path, head: Path, into: Path) -> list[tuple[str, str | None, str]]:
    """The head's PNG plots whose bytes differ from base, copied into `into` as
    <name>.base.png / <name>.head.png: (plot path, base copy or None if new, head copy)."""
    shutil.rmtree(into, ignore_errors=True)
    out = []
    for rel in declared_pngs(head):
        h, b = head / rel, base / rel
        if not h.is_file() or (b.is_file() and b.read_bytes() == h.read_bytes()):
            continue
        into.mkdir(parents=True, exist_ok=True)
        stem = rel.removesuffix(".png").replace("/", "_")
        shutil.copyfile(h, into / f"{stem}.head.png")
        if b.is_file():
            shutil.copyfile(b, into / f"{stem}.base.png")
        out.append((rel, f"{stem}.base.png" if b.is_file() else None, f"{stem}.head.png"))
    return out


# ---------------------------------------------------------------- markdown


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"`{json.dumps(v)}`" if isinstance(v, list | dict) else str(v)


def _change(b, h) -> str:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (b, h))
    return f"{h - b:+.4g}" if numbers else ""


def _area(path: str) -> str:
    return next((name for name, prefixes in AREAS if path.startswith(prefixes)), "Other")


def metrics_section(diff: dict) -> str:
    parts = ["### Metrics that changed"]
    names = [name for name, _ in AREAS] + (
        ["Other"] if any(_area(p) == "Other" for p, _ in diff) else []
    )
    for name in names:
        rows = [(p, k, b, h) for (p, k), (b, h) in diff.items() if _area(p) == name]
        parts.append(
            f"#### {name}\n\n"
            + (
                "no change"
                if not rows
                else "| path | key | base | head | change |\n|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {p} | {k} | {_fmt(b)} | {_fmt(h)} | {_change(b, h)} |"
                    for p, k, b, h in rows
                )
            )
        )
    return "\n\n".join(parts)


def params_section(diff: dict) -> str:
    if not diff:
        return "### Params that changed\n\nno change"
    return "### Params that changed\n\n| param | base | head |\n|---|---|---|\n" + "\n".join(
        f"| {k} | {_fmt(b)} | {_fmt(h)} |" for k, (b, h) in diff.items()
    )


def plots_section(plots: list, folder: str) -> str:
    if not plots:
        return "### Plots that changed\n\nno change"
    rows = [
        f"#### {rel}\n\n"
        + (f"base ![{rel} (base)]({folder}/{b}) head " if b else "new: ")
        + f"![{rel} (head)]({folder}/{h})"
        for rel, b, h in plots
    ]
    return "### Plots that changed\n\n" + "\n\n".join(rows)


def claims(head: Path) -> str:
    report = head / "reports/report.md"
    verdicts = (
        [
            line.removeprefix("### ")
            for line in report.read_text().splitlines()
            if line.startswith("### Claim")
        ]
        if report.is_file()
        else []
    )
    return "### Claims (this branch)\n\n" + ("\n".join(f"- {v}" for v in verdicts) or "_no report_")


def reproduction(trees: dict[str, Tree]) -> str:
    lines = [
        f"- {t.name} `{t.rev}` ({t.sha[:8]}): `dvc repro` {t.seconds:.0f} s, {len(t.ran)} stages run"
        + (f" ({', '.join(t.ran)})" if t.ran else "")
        + f", {len(t.cached)} restored from the run-cache"
        for t in trees.values()
    ]
    return "### Reproduction (smoke scale, fp32, one shared DVC cache)\n\n" + "\n".join(lines)


def _write(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(text)


def comment(base: str, out: Path, root: Path = Path(".")) -> str:
    root = root.resolve()
    out = out if out.is_absolute() else root / out
    cache = (
        root / _run(["dvc", "cache", "dir"], root).strip()
    ).resolve()  # this repository's, wherever configured
    with worktrees(root, {"base": base, "head": "HEAD"}) as trees:
        for tree in trees.values():
            reproduce(tree, cache, root / ".dvc" / "site_cache")
        b, h = trees["base"].path, trees["head"].path
        images = out.parent / out.stem  # reports/pr/ beside reports/pr.md
        parts = [
            f"## demystify: what this branch changes against `{base}`",
            "Both revisions reproduced in one job, the same way; only values that differ are listed.",
            claims(h),
            metrics_section(differences(metrics(b), metrics(h))),
            params_section(differences(params(b), params(h))),
            plots_section(changed_plots(b, h, images), images.name),
            reproduction(trees),
        ]
    text = "\n\n".join(parts) + "\n"
    _write(out, text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main")
    ap.add_argument("--out", default="reports/pr.md")
    args = ap.parse_args(argv)
    try:
        print(comment(args.base, Path(args.out)), end="")
    except ReproError as err:
        _write(
            Path(args.out),
            f"## demystify: could not compare against `{args.base}`\n\n```\n{err}\n```\n",
        )
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
