"""The online monitor: kNN top-1 of frozen pooled features on a small labelled split.

Queries come from the `val` split, the memory bank from `train` (MONITOR_SPLITS): the world's
validation instances, never its classification test instances, so watching training never looks
at the test set."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from demystify.backbone import eval_transform, pooled_features
from demystify.ssl.datasets import DataError, ViewsDataset, image_items

MONITOR_SPLITS = ("train", "val")  # (memory bank, queries) under pretrain.monitor


def _subset(items, per_class: int):
    seen: dict[int, int] = {}
    out = []
    for it in items:
        if seen.get(it.label, 0) < per_class:
            out.append(it)
            seen[it.label] = seen.get(it.label, 0) + 1
    return out


class KnnMonitor:
    def __init__(self, root: str | Path, size: int, per_class: int, k: int, batch_size: int = 128):
        root = Path(root)
        bank_split, query_split = MONITOR_SPLITS
        train, classes = image_items(root / bank_split, labelled=True)
        test, test_classes = image_items(root / query_split, labelled=True)
        if classes != test_classes:
            raise DataError(f"{root}: {bank_split} and {query_split} classes differ")
        self.chance = 1.0 / max(len(classes), 1)
        self.k = k
        transform = eval_transform(size)
        train, test = _subset(train, per_class), _subset(test, per_class)
        self.train = DataLoader(ViewsDataset(train, transform, 0), batch_size)
        self.test = DataLoader(ViewsDataset(test, transform, 0), batch_size)
        self.train_y = torch.tensor([it.label for it in train])
        self.test_y = torch.tensor([it.label for it in test])

    @torch.no_grad()
    def __call__(self, backbone: torch.nn.Module, device) -> float:
        was_training = backbone.training
        backbone.eval()
        try:
            # unit-length pooled features; the labels the loaders yield are train_y and test_y
            bank = pooled_features(backbone, (x for x, _ in self.train), device, unit=True)
            query = pooled_features(backbone, (x for x, _ in self.test), device, unit=True)
        finally:
            backbone.train(was_training)
        sim = query @ bank.T
        k = min(self.k, bank.shape[0])
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(query.shape[0], int(self.train_y.max()) + 1)
        votes.scatter_add_(
            1, self.train_y[idx], (top / 0.07).exp()
        )  # similarity-weighted, as in InstDisc
        return float((votes.argmax(1) == self.test_y).float().mean())
