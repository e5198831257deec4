"""Atomic writes: whole or nothing, with ordinary permissions."""

from __future__ import annotations

import os

import pytest

from demystify.core.io import atomic_dir, remove_stale_temporaries, write_json


def test_atomic_writes_get_normal_permissions(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    with atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as d:
        (d / "half").write_text("x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_removed(tmp_path):
    (tmp_path / ".clip.tmp-abc").mkdir()
    (tmp_path / "clip").mkdir()
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["clip"]
