"""Classification protocols on frozen features:

- linear probe: one linear layer, cross-entropy, trained in torch (GPU when present), on
  standardised features (train mean / std); its weight decay chosen from a grid by stratified
  k-fold cross-validation on the training split, for every model alike;
- weighted kNN: cosine similarity of features centred with the training mean, votes
  exp(sim / T) of the k nearest training images;
- VOC07 linear SVM: per class a one-vs-rest `LinearSVC` for each C of a grid, C chosen by
  k-fold cross-validated AP on the training set (positives weighted 2:1, as the FAIR
  self-supervision benchmark does), then test AP (VOC07 11-point); difficult
  labels (-1) are left out of training and scoring; mAP over classes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """Predicted class per test row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(train_x, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = ((x - mean) / std).to(device)
    y = torch.as_tensor(train_y, dtype=torch.long).to(device)
    classes = int(y.max()) + 1
    layer = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.01)
        layer.bias.zero_()
    layer = layer.to(device)
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, -(-len(x) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g).to(device)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(layer(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        t = ((torch.as_tensor(test_x, dtype=torch.float32) - mean) / std).to(device)
        return layer(t).argmax(1).cpu().numpy()


def choose_weight_decay(
    train_x: np.ndarray,
    train_y: np.ndarray,
    decays: list[float],
    folds: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: str = "cpu",
) -> tuple[float, dict[float, float]]:
    """The weight decay with the best mean held-out accuracy over stratified folds of the training
    split (ties: the first listed), and every decay's accuracy; the test split is never looked at."""
    if len(decays) == 1:
        return decays[0], {}
    from sklearn.model_selection import StratifiedKFold

    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(train_x, train_y))
    scores = {
        wd: float(
            np.mean(
                [
                    (
                        linear_probe(
                            train_x[tr],
                            train_y[tr],
                            train_x[va],
                            epochs,
                            lr,
                            wd,
                            batch_size,
                            seed,
                            device,
                        )
                        == train_y[va]
                    ).mean()
                    for tr, va in splits
                ]
            )
        )
        for wd in decays
    }
    return max(decays, key=lambda wd: (scores[wd], -decays.index(wd))), scores


def knn_predict(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, temperature: float
) -> np.ndarray:
    """Weighted kNN on cosine similarity of features centred with the training mean (every model
    alike: uncentred, features that share one large direction, as untrained ones do, look alike)."""
    mean = torch.as_tensor(train_x, dtype=torch.float32).mean(0)
    bank = F.normalize(torch.as_tensor(train_x, dtype=torch.float32) - mean, dim=1)
    query = F.normalize(torch.as_tensor(test_x, dtype=torch.float32) - mean, dim=1)
    labels = torch.as_tensor(train_y, dtype=torch.long)
    sim, idx = (query @ bank.T).topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(query), int(labels.max()) + 1, dtype=torch.float64)
    votes.scatter_add_(1, labels[idx], (sim.double() / temperature).exp())
    return votes.argmax(1).numpy()


def voc07_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """VOC07 11-point interpolated AP; labels 1 / 0, difficult (-1) rows ignored."""
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep]
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = labels[order] == 1
    recall = np.cumsum(tp) / tp.sum()
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    return float(
        np.mean(
            [
                precision[recall >= t].max() if (recall >= t).any() else 0.0
                for t in np.linspace(0, 1, 11)
            ]
        )
    )


def voc07_svm(
    train_x: np.ndarray,
    train_labels: np.ndarray,
    test_x: np.ndarray,
    test_labels: np.ndarray,
    costs: list[float],
    folds: int,
    seed: int,
) -> tuple[float, dict[str, float]]:
    """(mAP, per-class AP); labels (N, C) of 1 / 0 / -1 (difficult)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    scaler = StandardScaler().fit(train_x)
    tx, vx = scaler.transform(train_x), scaler.transform(test_x)
    aps = {}
    for c in range(train_labels.shape[1]):
        keep = train_labels[:, c] >= 0
        x, y = tx[keep], train_labels[keep, c]
        if y.min() == y.max():
            aps[c] = float("nan")
            continue
        splits = min(folds, int(min(y.sum(), (1 - y).sum())))
        best, best_cost = -1.0, costs[0]
        if splits >= 2:
            cv = StratifiedKFold(splits, shuffle=True, random_state=seed)
            for cost in costs:
                fold_aps = []
                for a, b in cv.split(x, y):
                    svm = LinearSVC(
                        C=cost,
                        class_weight={0: 1.0, 1: 2.0},
                        dual=True,
                        max_iter=5000,
                        random_state=seed,
                    ).fit(x[a], y[a])
                    fold_aps.append(voc07_ap(svm.decision_function(x[b]), y[b]))
                if np.nanmean(fold_aps) > best:
                    best, best_cost = float(np.nanmean(fold_aps)), cost
        svm = LinearSVC(
            C=best_cost, class_weight={0: 1.0, 1: 2.0}, dual=True, max_iter=5000, random_state=seed
        ).fit(x, y)
        aps[c] = voc07_ap(svm.decision_function(vx), test_labels[:, c].astype(int))
    values = [v for v in aps.values() if not np.isnan(v)]
    return (float(np.mean(values)) if values else float("nan")), aps
