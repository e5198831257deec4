"""The two end-to-end modules (each a real DVC repository reproduced at the smoke scale, several
minutes) are collected first, so that `make test` (pytest-xdist, one module per worker, with
--no-loadscope-reorder) starts them on different workers at once instead of leaving one of them
for last."""

SLOW_FIRST = ("test_pipeline.py", "test_recipes.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: order within a module kept
