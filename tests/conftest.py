"""The two end-to-end modules (each a real DVC repository reproduced at the smoke scale, several
minutes) are collected first, so that `make test` (pytest-xdist, one module per worker, with
--no-loadscope-reorder) starts them on different workers at once instead of leaving one of them
for last."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLOW_FIRST = ("test_pipeline.py", "test_recipes.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(
        key=lambda item: rank.get(item.path.name, len(SLOW_FIRST))
    )  # stable: order within a module kept


def pytest_configure(config):
    """The node's digest cache (demystify.core.digests) of this session alone, for every stage a test
    starts too: tests rewrite files fast in folders whose inodes the next test reuses, and a real
    run's cache under ~/.cache is never read or filled."""
    import os
    import tempfile

    if not os.environ.get(
        "DEMYSTIFY_CORES_DIR"
    ):  # core slots (demystify.cores) of this worker alone
        os.environ["DEMYSTIFY_CORES_DIR"] = tempfile.mkdtemp(prefix="cores-")
    if not os.environ.get("DEMYSTIFY_DIGESTS"):
        os.environ["DEMYSTIFY_DIGESTS"] = os.path.join(
            tempfile.mkdtemp(prefix="digests-"), "digests.sqlite"
        )


@pytest.fixture(scope="session")
def smoke_params_dir(tmp_path_factory):
    """`smoke_params_dir(name, *overrides)`: a new temporary folder `name` holding a params.yaml
    composed from the repository's conf/ at the smoke scale, then `overrides`; the folder."""
    from demystify.tools.params_file import compose

    def make(name: str, *overrides: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        compose(root / "params.yaml", ["scale=smoke", *overrides], config_dir=ROOT / "conf")
        return root

    return make
