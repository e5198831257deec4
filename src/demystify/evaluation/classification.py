"""The stage `evaluate_classification@MODEL` (`run_stage`): frozen features of a model's train
and test images scored by the classification protocols; metrics, every test image's prediction,
per-class AP and a confusion matrix. The protocols:

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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from demystify import machine
from demystify.core.config import ClassificationParams, LinearProbeParams
from demystify.core.figures import pyplot, save_png
from demystify.core.io import write_json, write_npz
from demystify.evaluation import labelled
from demystify.evaluation.features import Loading, Model, default_device, extract

SUMMARY = ("linear_top1", "knn_top1", "svm_map")  # the metrics of the stage's one printed line


@dataclass(frozen=True)
class _Split:
    """A split's images and labels, and their features."""

    data: labelled.LabelledImages
    feat: np.ndarray


def run_stage(
    model: Model,
    p: ClassificationParams,
    out_dir: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """`evaluate_classification@MODEL`: the VOC07 SVM on every format; on a single-label set
    (`folder`) the linear probe, the weighted kNN, every test image's prediction and a confusion
    matrix too. Writes metrics.json, per_class_ap.json (and per_image.npz, confusion.png) into
    out_dir. `device`: None, CUDA when present; `workers`: loader processes (None: machine.yaml's
    classification.workers)."""
    out_dir = Path(out_dir)
    workers = machine.load().classification_workers if workers is None else workers
    loading = Loading(device or default_device(), p.batch_size, workers, progress)
    train_data = _read(p, p.train_split)
    test_data = _read(p, p.test_split, train_data.classes)
    net = model.load(loading.device)
    train, test = (
        _Split(data, extract(net, data.paths, None, p.size, loading, f"classify@{model.name} {s}"))
        for data, s in ((train_data, "train"), (test_data, "test"))
    )
    mean_ap, per_class_ap = voc07_svm(
        train.feat, train.data.labels, test.feat, test.data.labels, p.svm.costs, p.svm.folds, p.seed
    )
    metrics = {
        "svm_map": round(mean_ap, 6),
        "images_train": len(train.data.paths),
        "images_test": len(test.data.paths),
    }
    if p.format == "folder":  # single-label: top-1 protocols and a confusion matrix
        metrics |= _single_label(model.name, p, train, test, loading.device, out_dir)
    classes = train.data.classes
    write_json(out_dir / "per_class_ap.json", {classes[c]: v for c, v in per_class_ap.items()})
    write_json(out_dir / "metrics.json", metrics)
    print(
        f"evaluate_classification@{model.name}: "
        + ", ".join(f"{k} {metrics[k]}" for k in SUMMARY if k in metrics)
    )
    return metrics


def _read(p: ClassificationParams, split: str, classes=None) -> labelled.LabelledImages:
    if p.format == "voc07":
        return labelled.voc07_classification(p.data, split)
    return labelled.folder_classification(p.data, split, classes)


def _single_label(
    name: str, p: ClassificationParams, train: _Split, test: _Split, device: str, out_dir: Path
) -> dict:
    """The linear probe (its weight decay cross-validated on the train split) and the kNN: their
    metrics; every test image's prediction into per_image.npz, the probe's confusion.png."""
    ty, vy = train.data.single_label, test.data.single_label
    decay, _ = choose_weight_decay(train.feat, ty, p.linear, p.seed, device)
    linear = linear_probe(train.feat, ty, test.feat, p.linear, decay, p.seed, device)
    knn = knn_predict(train.feat, ty, test.feat, p.knn.k, p.knn.temperature)
    # every test image's prediction, which the report resamples for confidence intervals
    write_npz(
        out_dir / "per_image.npz",
        path=np.asarray(test.data.paths, dtype=str),
        truth=vy,
        linear=linear,
        knn=knn,
        unit=test_units(p.data, test.data.paths),
    )
    classes = train.data.classes
    confusion_png(vy, linear, classes, out_dir / "confusion.png", f"{name}: linear probe")
    return {
        "linear_weight_decay": decay,
        "linear_top1": round(float((linear == vy).mean()), 6),
        "knn_top1": round(float((knn == vy).mean()), 6),
        "chance": round(1 / len(classes), 6),
    }


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    p: LinearProbeParams,
    weight_decay: float,
    seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """Predicted class per test row: `p` (classification.linear) gives the epochs, learning rate
    and batch size, `weight_decay` the decay (choose_weight_decay's pick from p.weight_decays)."""
    epochs, lr, batch_size = p.epochs, p.lr, p.batch_size
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
    p: LinearProbeParams,
    seed: int,
    device: str = "cpu",
) -> tuple[float, dict[float, float]]:
    """The weight decay of p.weight_decays with the best mean held-out accuracy over p.folds
    stratified folds of the training split (ties: the first listed), and every decay's accuracy;
    the test split is never looked at."""
    decays = p.weight_decays
    if len(decays) == 1:
        return decays[0], {}
    from sklearn.model_selection import StratifiedKFold

    splits = list(StratifiedKFold(p.folds, shuffle=True, random_state=seed).split(train_x, train_y))

    def accuracy(wd: float, train: np.ndarray, held_out: np.ndarray) -> float:
        pred = linear_probe(train_x[train], train_y[train], train_x[held_out], p, wd, seed, device)
        return (pred == train_y[held_out]).mean()

    scores = {wd: float(np.mean([accuracy(wd, tr, va) for tr, va in splits])) for wd in decays}
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


def test_units(root: str | Path, paths: list[str]) -> np.ndarray:
    """The independent unit of each test image, which the report's bootstrap resamples: its object
    instance where the set's `annotations.csv` (path relative to the set, instance; the synthetic
    world writes one) names it, else the image itself."""
    table_path = Path(root) / "annotations.csv"
    if table_path.is_file():
        import pandas as pd

        try:
            table = pd.read_csv(table_path, usecols=["path", "instance"])
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise labelled.LabelError(
                f"{table_path}: expected columns path, instance ({exc})"
            ) from None
        instance_of = {
            str(Path(root) / p): i for p, i in zip(table["path"], table["instance"], strict=True)
        }
        if all(p in instance_of for p in paths):
            return np.asarray([f"instance:{instance_of[p]}" for p in paths], dtype=str)
    return np.asarray(
        [
            f"image:{Path(p).relative_to(root) if Path(p).is_relative_to(root) else p}"
            for p in paths
        ],
        dtype=str,
    )


def confusion_png(
    truth: np.ndarray, pred: np.ndarray, classes: list[str], path: Path, title: str
) -> None:
    from sklearn.metrics import confusion_matrix

    plt = pyplot()

    conf = confusion_matrix(truth, pred, labels=range(len(classes)), normalize="true")
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(classes), 0.8 + 0.45 * len(classes)))
    ax.imshow(conf, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=100)
