"""Downstream evaluation: each protocol where the right answer is known, every reader on tiny
fixtures in its public layout, the stage functions end to end, and the bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from demystify.backbone import backbone, plain_backbone_state
from demystify.core.config import ClassificationParams, LinearProbeParams, SegmentationParams
from demystify.evaluation import classification, labelled, segmentation
from demystify.evaluation.features import Model, load_model


def _separable(n_per=20, classes=4, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, dim) * 10
    y = np.repeat(np.arange(classes), n_per)
    return centres[y] + rng.normal(scale=0.5, size=(len(y), dim)), y


def _linear(epochs, lr, batch_size, weight_decays=(0.0,), folds=2):
    """A classification.linear params section."""
    return LinearProbeParams(
        epochs=epochs,
        lr=lr,
        weight_decays=list(weight_decays),
        folds=folds,
        batch_size=batch_size,
    )


# --- protocols -----------------------------------------------------------------------------------


def test_linear_probe_and_knn_reach_100_on_separable_features():
    x, y = _separable()
    tx, ty = _separable(seed=1)
    p = _linear(epochs=30, lr=0.05, batch_size=16)
    pred = classification.linear_probe(x, y, tx, p, weight_decay=0.0, seed=0)
    assert (pred == ty).mean() == 1.0
    assert (classification.knn_predict(x, y, tx, k=5, temperature=0.07) == ty).mean() == 1.0
    again = classification.linear_probe(x, y, tx, p, weight_decay=0.0, seed=0)
    assert np.array_equal(pred, again)


def test_knn_centres_features_with_the_training_mean():
    """A large direction shared by every feature (as in untrained networks) makes uncentred cosines
    all near 1; centred on the training mean, the class structure decides again."""
    x, y = _separable()
    tx, ty = _separable(seed=1)
    shift = np.full(
        x.shape[1], 1e5
    )  # uncentred, float32 cosines cannot tell the classes apart (0.39 here)
    assert (
        classification.knn_predict(x + shift, y, tx + shift, k=5, temperature=0.07) == ty
    ).mean() == 1.0


def test_weight_decay_is_chosen_on_the_training_split():
    x, y = _separable()
    p = _linear(epochs=30, lr=0.05, batch_size=16, weight_decays=[50.0, 0.0], folds=2)
    decay, scores = classification.choose_weight_decay(x, y, p, seed=0)
    assert (
        decay == 0.0 and scores[0.0] > scores[50.0]
    )  # a huge decay underfits; cross-validation sees it
    one = _linear(epochs=30, lr=0.05, batch_size=16, weight_decays=[0.1], folds=2)
    assert classification.choose_weight_decay(x, y, one, 0) == (0.1, {})


def test_linear_probe_is_at_chance_on_noise():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 8)), rng.integers(0, 4, 200)
    tx, ty = rng.normal(size=(400, 8)), rng.integers(0, 4, 400)
    acc = (classification.linear_probe(x, y, tx, _linear(20, 0.05, 32), 0.0, 0) == ty).mean()
    assert 0.1 < acc < 0.4


def test_voc07_ap_by_hand():
    # ranked labels 1, 0, 1: recall 0.5 at precision 1, recall 1 at precision 2/3
    # 11-point AP = (6 * 1 + 5 * 2/3) / 11; a difficult (-1) row is ignored wherever it ranks
    ap = classification.voc07_ap(np.array([0.9, 0.95, 0.8, 0.7]), np.array([1, -1, 0, 1]))
    assert ap == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert classification.voc07_ap(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0


def test_voc07_svm_separable_multilabel_reaches_map_1():
    x, y = _separable(n_per=12)
    tx, ty = _separable(n_per=12, seed=1)
    labels, test_labels = np.eye(4, dtype=np.int8)[y], np.eye(4, dtype=np.int8)[ty]
    labels[:, 3] = np.where(y == 3, 1, 0)  # unchanged; and an image carrying two labels:
    labels[0, 1] = -1  # difficult: left out of training
    mean_ap, per_class = classification.voc07_svm(
        x, labels, tx, test_labels, [0.1, 1.0], folds=3, seed=0
    )
    assert mean_ap == pytest.approx(1.0) and len(per_class) == 4


# --- readers -------------------------------------------------------------------------------------


def _png(path, size=(24, 24), value=(10, 200, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_folder_reader_and_bad_labels(tmp_path):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for i in range(2):
                _png(tmp_path / split / cls / f"{i}.png")
    train = labelled.folder_classification(tmp_path, "train")
    assert train.classes == ["cat", "dog"] and train.single_label.tolist() == [0, 0, 1, 1]
    _png(tmp_path / "test" / "emu" / "0.png")
    with pytest.raises(labelled.LabelError, match="emu.*not in the class list"):
        labelled.folder_classification(tmp_path, "test", train.classes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(labelled.LabelError, match="empty split"):
        labelled.folder_classification(tmp_path, "empty")


def test_voc07_reader(tmp_path):
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    names = ["000005", "000007", "000009"]
    for c, cls in enumerate(labelled.VOC_CLASSES):
        marks = ["1" if c == i else ("0" if (c, i) == (4, 2) else "-1") for i in range(3)]
        (main / f"{cls}_trainval.txt").write_text(
            "".join(f"{n} {m}\n" for n, m in zip(names, marks, strict=True))
        )
    data = labelled.voc07_classification(tmp_path, "trainval")
    assert data.paths[0].endswith("JPEGImages/000005.jpg") and data.labels.shape == (3, 20)
    assert (
        data.labels[0, 0] == 1 and data.labels[1, 1] == 1 and data.labels[2, 4] == -1
    )  # "0" = difficult
    assert data.labels[0, 1] == 0
    (main / "bus_trainval.txt").write_text("000005 2\n")
    with pytest.raises(labelled.LabelError, match="bus_trainval.txt:1"):
        labelled.voc07_classification(tmp_path, "trainval")


def test_voc2012_and_ade20k_masks(tmp_path):
    voc = tmp_path / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    _png(voc / "JPEGImages" / "2007_000033.jpg", size=(6, 4))
    mask = np.zeros((4, 6), np.uint8)
    mask[1, 1:3], mask[2, 2] = 15, 255  # person, void
    palette = Image.fromarray(mask, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0] * 128)
    (voc / "SegmentationClass").mkdir()
    palette.save(voc / "SegmentationClass" / "2007_000033.png")
    data = labelled.voc2012_segmentation(voc, "val")
    got = labelled.read_mask(data.masks[0], data, (4, 6))
    assert len(data.classes) == 21 and got[1, 1] == 15 and got[2, 2] == 255 and got[0, 0] == 0
    with pytest.raises(labelled.LabelError, match="2007_000033.png: mask is 6x4, its image 8x8"):
        labelled.read_mask(data.masks[0], data, (8, 8))
    mask[0, 0] = 30
    palette = Image.fromarray(mask, mode="P")
    palette.putpalette(
        [0, 0, 0, 128, 0, 0] * 128
    )  # VOC masks carry a palette (PIL remaps indices without one)
    palette.save(voc / "SegmentationClass" / "2007_000033.png")
    with pytest.raises(labelled.LabelError, match="label 30 outside the 21 classes"):
        labelled.read_mask(data.masks[0], data)

    ade = tmp_path / "ADEChallengeData2016"
    _png(ade / "images" / "validation" / "ADE_val_00000001.jpg", size=(3, 2))
    ann = ade / "annotations" / "validation" / "ADE_val_00000001.png"
    ann.parent.mkdir(parents=True)
    Image.fromarray(np.array([[0, 1, 150], [2, 2, 0]], np.uint8), mode="L").save(ann)
    data = labelled.ade20k_segmentation(ade, "val")
    got = labelled.read_mask(data.masks[0], data, (2, 3))
    assert got.tolist() == [[255, 0, 149], [1, 1, 255]]  # 0 unlabelled -> ignored, 1..150 -> 0..149
    Image.fromarray(np.array([[151, 1, 1], [2, 2, 0]], np.uint8), mode="L").save(ann)
    with pytest.raises(labelled.LabelError, match="label 151 outside the 150 classes"):
        labelled.read_mask(data.masks[0], data)


# --- segmentation head and scores ----------------------------------------------------------------


def test_iou_by_hand_and_a_head_that_fits():
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 2]])
    s = segmentation.scores(segmentation.confusion(pred, target, 3, 255))
    # class 0: tp 3, union 4; class 1: tp 3, union 4; class 2: absent everywhere kept (255 ignored)
    assert s["iou"][:2] == [0.75, 0.75] and s["iou"][2] is None
    assert s["miou"] == 0.75 and s["pixel_accuracy"] == pytest.approx(6 / 7)
    # maps whose first channel says the class: a linear head must fit them exactly
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(16, 8, 8, generator=g) > 0.5).long()
    maps = [torch.cat([masks[:, None].float() * 4 - 2, torch.randn(16, 3, 8, 8, generator=g)], 1)]
    p = _params(
        "segmentation", "unused", head="linear", epochs=60, lr=0.05, weight_decay=0.0, batch_size=8
    )
    head = segmentation.train_head(maps, masks, 2, p, ignore_index=255, device="cpu")
    pred = torch.cat(list(segmentation.predict(head, maps, (8, 8), 8, "cpu")))
    assert segmentation.scores(segmentation.confusion(pred, masks, 2, 255))["miou"] == 1.0


# --- the stage functions -------------------------------------------------------------------------


def _params(kind, data, **kw):
    if kind == "classification":
        base = dict(
            format="folder",
            data=str(data),
            train_split="train",
            test_split="test",
            size=32,
            batch_size=8,
            linear={
                "epochs": 5,
                "lr": 0.01,
                "weight_decays": [0.0, 0.01],
                "folds": 2,
                "batch_size": 8,
            },
            knn={"k": 3, "temperature": 0.07},
            svm={"costs": [0.1, 1.0], "folds": 2},
            seed=0,
        )
        return ClassificationParams.model_validate({**base, **kw})
    base = dict(
        format="world",
        data=str(data),
        train_split="train",
        test_split="test",
        size=32,
        layers=["layer2", "layer3"],
        head="linear",
        epochs=3,
        lr=0.01,
        weight_decay=0.0,
        batch_size=4,
        examples=2,
        seed=0,
    )
    return SegmentationParams.model_validate({**base, **kw})


def _m(model_file):
    """The model the stage functions score: an untrained ResNet-18 saved to `model_file`."""
    return Model("m", "resnet18", model_file)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "backbone.pt"
    torch.save(plain_backbone_state(backbone("resnet18")), path)
    return path


def test_classify_end_to_end(tmp_path, model_file):
    colours = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}
    for split in ("train", "test"):
        for cls, colour in colours.items():
            for i in range(4):
                _png(
                    tmp_path / "data" / split / cls / f"{i}.png",
                    value=tuple(c + 5 * i for c in colour),
                )
    p = _params("classification", tmp_path / "data")
    m = classification.run_stage(_m(model_file), p, tmp_path / "out", device="cpu", progress=False)
    assert set(m) >= {"linear_top1", "knn_top1", "svm_map", "chance"} and m[
        "chance"
    ] == pytest.approx(1 / 3)
    assert m["knn_top1"] == 1.0  # flat colours: even random features separate them
    assert (tmp_path / "out" / "confusion.png").stat().st_size > 1000
    assert (
        classification.run_stage(_m(model_file), p, tmp_path / "out2", device="cpu", progress=False)
        == m
    )  # deterministic
    (tmp_path / "data" / "test" / "red" / "0.png").write_bytes(b"garbage")
    with pytest.raises(Exception, match="test/red/0.png: cannot read image"):
        classification.run_stage(_m(model_file), p, tmp_path / "out3", device="cpu", progress=False)


def _segmentation_set(root, n=4):
    root.mkdir()
    (root / "classes.txt").write_text("background\nthing\n")
    for split in ("train", "test"):
        for i in range(n):
            _png(root / split / "images" / f"{i:05d}.png", size=(32, 32), value=(30 * i, 90, 40))
            mask = np.zeros((32, 32), np.uint8)
            mask[8:24, 4 + i : 20 + i] = 1
            (root / split / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{i:05d}.png")
    return root


def test_segment_end_to_end_and_bad_masks(tmp_path, model_file):
    root = _segmentation_set(tmp_path / "seg")
    p = _params("segmentation", root)
    m = segmentation.run_stage(_m(model_file), p, tmp_path / "out", device="cpu", progress=False)
    assert 0.0 <= m["miou"] <= 1.0 and 0.0 <= m["pixel_accuracy"] <= 1.0 and m["images_test"] == 4
    assert (tmp_path / "out" / "examples.png").is_file()
    assert (
        segmentation.run_stage(_m(model_file), p, tmp_path / "out2", device="cpu", progress=False)
        == m
    )
    Image.fromarray(np.full((32, 32), 7, np.uint8), mode="L").save(
        root / "test" / "masks" / "00002.png"
    )
    with pytest.raises(labelled.LabelError, match="00002.png: label 7 outside the 2 classes"):
        segmentation.run_stage(_m(model_file), p, tmp_path / "out3", device="cpu", progress=False)
    Image.fromarray(np.zeros((16, 32), np.uint8), mode="L").save(
        root / "test" / "masks" / "00002.png"
    )
    with pytest.raises(labelled.LabelError, match="00002.png: mask is 32x16, its image 32x32"):
        segmentation.run_stage(_m(model_file), p, tmp_path / "out4", device="cpu", progress=False)
    for f in (root / "test" / "images").iterdir():
        f.unlink()
    with pytest.raises(labelled.LabelError, match="test/images: empty split"):
        segmentation.run_stage(_m(model_file), p, tmp_path / "out5", device="cpu", progress=False)


def test_map_file_rows_by_slice_and_by_index(tmp_path):
    rows = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    f = segmentation.MapFile(tmp_path / "maps.npy", rows.shape, np.float32)
    f.write(0, rows[:3])
    f.write(3, rows[3:])
    assert len(f) == 5 and np.array_equal(np.load(tmp_path / "maps.npy"), rows)  # a plain .npy
    assert torch.equal(f[1:4], torch.from_numpy(rows[1:4])) and f[1:4].dtype == torch.float32
    assert torch.equal(f[torch.tensor([4, 0, 2])], torch.from_numpy(rows[[4, 0, 2]]))
    m = segmentation.MapFile(tmp_path / "masks.npy", (2, 2), np.uint8)
    m.write(0, np.array([[255, 1], [0, 3]]))
    assert m[0:2].dtype == torch.int64 and m[0:2].tolist() == [[255, 1], [0, 3]]


def _reference_segment(arch, model_path, p):
    """The evaluation the straightforward way: every map in memory, one tensor per stage."""
    from torch.utils.data import DataLoader

    model = load_model(model_path, arch, "cpu")
    out = {}
    for split in ("train", "test"):
        data = labelled.world_segmentation(p.data, split)
        maps, masks = [], []
        for x, y in DataLoader(segmentation._Scenes(data, p.size), batch_size=p.batch_size):
            maps.append(segmentation.stage_maps(model, x, list(p.layers)))
            masks.append(y)
        out[split] = [torch.cat(m) for m in zip(*maps, strict=True)], torch.cat(masks), data
    (train_maps, train_masks, train), (test_maps, test_masks, _) = out["train"], out["test"]
    head = segmentation.train_head(
        train_maps, train_masks, len(train.classes), p, train.ignore_index, "cpu"
    )
    pred = torch.cat(
        list(segmentation.predict(head, test_maps, (p.size, p.size), p.batch_size, "cpu"))
    )
    per_image = np.stack(
        [segmentation.confusion(pred[i], test_masks[i], 2, 255) for i in range(len(pred))]
    )
    return segmentation.scores(segmentation.confusion(pred, test_masks, 2, 255)), per_image


def test_segment_streams_maps_through_files_it_removes(tmp_path, model_file, monkeypatch):
    """Maps written to files in a scratch folder (read back a batch at a time), gone afterwards and
    after an error; the numbers those of the all-in-memory reference, uneven last batch included."""
    import json

    root = _segmentation_set(tmp_path / "seg", n=5)
    p = _params(
        "segmentation", root, batch_size=2, head="fcn", epochs=2, layers=["layer1", "layer3"]
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = []
    train_head = segmentation.train_head

    def spy(maps, masks, *args, **kw):
        seen.append(
            (
                maps,
                masks,
                sorted(
                    str(q.relative_to(scratch)).split("/", 1)[1] for q in scratch.rglob("*.npy")
                ),
            )
        )
        return train_head(maps, masks, *args, **kw)

    monkeypatch.setattr(segmentation, "train_head", spy)
    m = segmentation.run_stage(
        _m(model_file), p, tmp_path / "out", device="cpu", progress=False, scratch=scratch
    )
    maps, masks, files = seen[0]
    assert all(isinstance(x, segmentation.MapFile) for x in (*maps, masks)) and maps[0].shape == (
        5,
        64,
        8,
        8,
    )
    assert files == [
        "test/layer1.npy",
        "test/layer3.npy",
        "test/masks.npy",
        "train/layer1.npy",
        "train/layer3.npy",
        "train/masks.npy",
    ]
    assert list(scratch.iterdir()) == []
    ref, ref_per_image = _reference_segment("resnet18", model_file, p)
    assert np.array_equal(np.load(tmp_path / "out" / "per_image.npz")["confusion"], ref_per_image)
    assert m["miou"] == round(ref["miou"], 6) and m["pixel_accuracy"] == round(
        ref["pixel_accuracy"], 6
    )
    assert json.loads((tmp_path / "out" / "per_class_iou.json").read_text()) == dict(
        zip(["background", "thing"], ref["iou"], strict=True)
    )

    def fail(*args, **kw):
        raise RuntimeError("head failed")

    monkeypatch.setattr(segmentation, "train_head", fail)
    with pytest.raises(RuntimeError, match="head failed"):
        segmentation.run_stage(
            _m(model_file), p, tmp_path / "out2", device="cpu", progress=False, scratch=scratch
        )
    assert list(scratch.iterdir()) == []
    Image.fromarray(np.full((32, 32), 7, np.uint8), mode="L").save(
        root / "test" / "masks" / "00003.png"
    )
    with pytest.raises(
        labelled.LabelError, match="label 7"
    ):  # while the test split's maps are written
        segmentation.run_stage(
            _m(model_file), p, tmp_path / "out3", device="cpu", progress=False, scratch=scratch
        )
    assert list(scratch.iterdir()) == []
