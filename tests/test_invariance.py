"""The invariance score (hand-computed cases for each quirk, and an independent loop version of
docs/science.md's definition), the set readers on tiny fixtures in the public layouts, feature files
and the bad inputs of the invariance evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.io import savemat
from torchvision.io import write_jpeg, write_png

from demystify.backbone import CheckpointError, backbone, plain_backbone_state
from demystify.evaluation import sets
from demystify.evaluation.features import FeatureError, Loading, extract, load_model
from demystify.evaluation.invariance import (
    InvarianceError,
    invariance_scores,
    set_contributions,
    write_features,
)


def reference_score(feat, instance, classes, k):
    """docs/science.md's steps 1-6, one neuron and one set at a time (no vectorisation shared with the code)."""
    feat = np.asarray(feat, dtype=float)
    n, d = feat.shape
    class_list = sorted(set(classes.tolist()))
    p = min((1 - 1 / len(class_list)) * 100, 95)
    idx = math.floor(n * p / 100)
    per_class_ratios = {c: [] for c in class_list}
    for i in range(d):
        column = feat[:, i]
        t = sorted(column)[idx]
        s = sorted(column, reverse=True)[idx]
        g = sum(1 for z in column if z >= t) / n
        sums, counts = dict.fromkeys(class_list, 0.0), dict.fromkeys(class_list, 0)
        for set_id in sorted(set(instance.tolist())):
            members = [j for j in range(n) if instance[j] == set_id]
            if len(members) < 3:
                continue
            up = sum(1 for j in members if column[j] > t)
            down = sum(1 for j in members if column[j] < s)
            count = max(up, down)
            if count > 0:
                y = classes[members[0]]
                sums[y] += count / len(members)
                counts[y] += 1
        for c in class_list:
            local = sums[c] / counts[c] if counts[c] else 0.0
            per_class_ratios[c].append(local / g)
    tops = [np.mean(sorted(r, reverse=True)[:k]) for r in per_class_ratios.values()]
    return float(np.mean(tops) * (100 - p))


# --- the score -----------------------------------------------------------------------------------


def test_ties_use_ge_globally_and_gt_locally():
    # C = 2 -> P = 50; N = 6 -> index 3; t = s = 1; G = 4/6.
    # set a (0, 0, 1): none > 1, two < 1 -> 2/3; set b (1, 1, 2): one > 1 -> 1/3.
    # ratios 1.0 and 0.5 -> class mean 0.75 -> x (100 - 50) = 37.5
    feat = np.array([[0], [0], [1], [1], [1], [2]], dtype=float)
    instance = np.array([0, 0, 0, 1, 1, 1])
    classes = np.array(["a", "a", "a", "b", "b", "b"])
    assert invariance_scores(feat, instance, classes, ks=(1,))[1] == pytest.approx(37.5, abs=1e-9)
    assert reference_score(feat, instance, classes, 1) == pytest.approx(37.5, abs=1e-9)


def test_sign_is_chosen_per_set_and_neuron():
    # C = 3 -> P = 66.67; N = 9 -> index 6: t = 0 (ascending), s = 0 (descending); G = 7/9.
    # set 0 (-9, -8, 0): two strictly below s -> 2/3; set 1 (0, 0, 0): nothing; set 2 (0, 7, 9): two
    # strictly above t -> 2/3. Ratios 6/7, 0, 6/7 -> mean 4/7 -> x (100 - 66.67)
    feat = np.array([[-9], [-8], [0], [0], [0], [0], [0], [7], [9]], dtype=float)
    instance = np.repeat([0, 1, 2], 3)
    expected = 4 / 7 * (100 - 200 / 3)
    assert invariance_scores(feat, instance, None, ks=(1,))[1] == pytest.approx(expected, abs=1e-9)
    assert reference_score(feat, instance, instance, 1) == pytest.approx(expected, abs=1e-9)


def test_small_sets_are_skipped_and_empty_classes_count_zero():
    # class "c" has only a 2-image set: it contributes nothing, yet it is in the class mean (quirk).
    # C = 3 -> P = 66.67; N = 8 -> index 5: t = 2 (ascending), s = 1 (descending [9,9,2,1,1,1,0,0]);
    # G = 3/8. Set a (0, 0, 1): two below 1 -> 2/3; set b (1, 1, 2): none; set c: skipped.
    # Ratios 16/9, 0, 0 -> mean 16/27 -> x (100 - 66.67). (Were c scored, or left out of the
    # mean, the result would differ.)
    feat = np.array([[0], [0], [1], [1], [1], [2], [9], [9]], dtype=float)
    instance = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    classes = np.array(["a", "a", "a", "b", "b", "b", "c", "c"])
    expected = 16 / 27 * (100 - 200 / 3)
    assert invariance_scores(feat, instance, classes, ks=(1,))[1] == pytest.approx(
        expected, abs=1e-9
    )
    assert reference_score(feat, instance, classes, 1) == pytest.approx(expected, abs=1e-9)


def test_class_mean_before_scaling_and_top_k():
    rng = np.random.default_rng(0)
    for trial in range(5):
        n_sets, per, d = 12, int(rng.integers(2, 6)), 40
        feat = np.maximum(rng.normal(size=(n_sets * per, d)), 0)  # ReLU-like: many ties at 0
        instance = np.repeat(np.arange(n_sets), per)
        classes = np.repeat(rng.integers(0, 4, n_sets), per).astype(str)
        got = invariance_scores(feat, instance, classes, ks=(10, 25))
        for k in (10, 25):
            assert got[k] == pytest.approx(reference_score(feat, instance, classes, k), abs=1e-6), (
                trial,
                k,
            )


def test_bad_score_inputs_are_named():
    feat = np.ones((6, 30))
    with pytest.raises(InvarianceError, match="one target class"):
        invariance_scores(feat, np.zeros(6), np.zeros(6))
    with pytest.raises(InvarianceError, match="3 or more images"):
        invariance_scores(feat, np.arange(6), None)
    with pytest.raises(InvarianceError, match="only 30"):
        invariance_scores(feat, np.repeat([0, 1], 3), None, ks=(50,))


# --- readers on tiny fixtures in the public layouts ----------------------------------------------


def _image(path, size=(24, 32), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = torch.full((3, *size), value, dtype=torch.uint8)
    img[:, 4:12, 4:12] = 255 - value
    (write_jpeg if path.suffix.lower() in (".jpg", ".jpeg") else write_png)(img, str(path))


def test_aloi_reader(tmp_path):
    for obj in (1, 2, 10):
        for deg in (0, 5, 10):
            _image(tmp_path / "aloi_red2_view" / "png2" / str(obj) / f"{obj}_r{deg}.png")
    s = sets.aloi(tmp_path, "view")
    assert len(s) == 9 and s.instance.tolist() == [1, 1, 1, 2, 2, 2, 10, 10, 10]
    assert (s.classes == s.instance.astype(str)).all()
    with pytest.raises(sets.SetError, match="aloi_red2_ill"):
        sets.aloi(tmp_path, "ill")


def _got_video(root, name, covers, cls="mug"):
    seq = root / name
    seq.mkdir(parents=True)
    (seq / "meta_info.ini").write_text(f"[METAINFO]\nobject_class: {cls}\nanno_fps: 10Hz\n")
    (seq / "groundtruth.txt").write_text("".join("2,3,10,12\n" for _ in covers))
    (seq / "cover.label").write_text("".join(f"{c}\n" for c in covers))
    for t in range(len(covers)):
        _image(seq / f"{t + 1:08d}.jpg", value=10 * t)


def test_got10k_occlusion_reader_keeps_the_papers_rules(tmp_path):
    root = tmp_path / "train"
    covers_a = [8, 8, 7, 3, 3, 1, 8]  # span 7: kept, levels 1, 3, 7, 8
    covers_b = [8, 7, 6, 5, 5, 6]  # span 3: dropped
    covers_c = [0, 4, 4, 8, 2]  # span 8: kept
    _got_video(root, "GOT-10k_Train_000001", covers_a)
    _got_video(root, "GOT-10k_Train_000002", covers_b)
    _got_video(root, "GOT-10k_Train_000003", covers_c, cls="sea turtle")
    (root / "list.txt").write_text(
        "GOT-10k_Train_000001\nGOT-10k_Train_000002\nGOT-10k_Train_000003\n"
    )
    s = sets.got10k_occlusion(root, seed=1992)
    assert s.instance.tolist() == [0] * 4 + [1] * 4  # levels 1, 3, 7, 8 and 0, 2, 4, 8
    assert s.classes.tolist() == ["mug"] * 4 + ["sea_turtle"] * 4
    assert any("000002" in note and "span 3" in note for note in s.skipped)
    # the frames are those the public code's np.random.seed(1992) + np.random.choice draw
    np.random.seed(1992)
    expected = []
    for covers in (covers_a, covers_c):
        covers = np.asarray(covers)
        expected += [int(np.random.choice(np.where(covers == c)[0])) for c in np.unique(covers)]
    frames = [int(p.rsplit("/", 1)[1][:8]) - 1 for p in s.paths]
    assert frames == expected
    assert all(b == (2.0, 3.0, 10.0, 12.0) for b in s.boxes)
    (root / "GOT-10k_Train_000003" / "cover.label").write_text("0\n4\nnine\n8\n2\n")
    with pytest.raises(sets.SetError, match=r"000003/cover.label:3"):
        sets.got10k_occlusion(root)


def _pascal3d_record(path, objects):
    """A PASCAL3D+ annotation as MATLAB writes it: record.objects is a 1xN struct array."""
    dtype = [("class", object), ("bbox", object), ("viewpoint", object)]
    arr = np.zeros((1, len(objects)), dtype=dtype)
    for i, (cls, box, az, el) in enumerate(objects):
        arr[0, i] = (
            cls,
            np.array([box], float),
            {"azimuth_coarse": az, "elevation_coarse": el, "distance": 5.0},
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"record": {"filename": path.stem + ".JPEG", "objects": arr}})


def test_pascal3d_reader_bins_and_sets(tmp_path):
    root = tmp_path / "PASCAL3D+_release1.1"
    views = {
        "car": [(10, 5), (190, 35), (40, 10), (220, 40), (70, 80)],
        "chair": [(15, 5), (100, 50), (195, 10)],
    }
    for cls, vs in views.items():
        names = [f"n0000_{i}" for i in range(len(vs))]
        for name, (az, el) in zip(names, vs, strict=True):
            _image(root / "Images" / f"{cls}_imagenet" / f"{name}.JPEG")
            _pascal3d_record(
                root / "Annotations" / f"{cls}_imagenet" / f"{name}.mat",
                [(cls, [3, 4, 20, 18], az, el)],
            )
        (root / "Image_sets").mkdir(parents=True, exist_ok=True)
        (root / "Image_sets" / f"{cls}_imagenet_train.txt").write_text("\n".join(names[:-1]) + "\n")
        (root / "Image_sets" / f"{cls}_imagenet_val.txt").write_text(names[-1] + "\n")
    # the PASCAL part: "name object_index" lines, the second object of a two-object record
    _image(root / "Images" / "car_pascal" / "2008_000001.jpg")
    _pascal3d_record(
        root / "Annotations" / "car_pascal" / "2008_000001.mat",
        [("car", [1, 1, 5, 5], 300, 0), ("car", [2, 2, 22, 20], 100, 20)],
    )
    (root / "Image_sets" / "car_pascal.txt").write_text("2008_000001 1\n")
    found = sets.pascal3d(root)
    inst, view = found["pascal3d_instance"], found["pascal3d_instance_viewpoint"]
    assert len(inst) == 9 and inst.classes.tolist() == ["car"] * 5 + ["chair"] * 3 + ["car"]
    # azimuth bins (az mod 180) // 30: car 0, 0, 1, 1, 2 (+ pascal 3); elevation (el mod 90) // 30: 0, 1, 0, 1, 2 (+ 0)
    # car bins (0,0) (0,1) (1,0) (1,1) (2,2) + pascal (3,0) -> 0..5; chair (0,0) (3,1) (0,0) -> 6, 7, 6
    assert inst.instance.tolist() == [0, 1, 2, 3, 4, 6, 7, 6, 5]
    assert inst.boxes[0] == (3.0, 4.0, 17.0, 14.0)  # [x1 y1 x2 y2] -> x, y, w, h
    assert inst.boxes[8] == (2.0, 2.0, 20.0, 18.0)  # objects[1] of the PASCAL record
    # instance+viewpoint: k-th image of each azimuth bin of a class; numbering continues from the max
    assert view.instance[:5].tolist() == [0, 1, 0, 1, 0]
    assert view.instance[8] == 0  # pascal car in bin 3, first of its bin
    assert view.instance[5:8].tolist() == [2, 2, 3]  # chair bins 0, 3, 0, counting on from car's 2
    (root / "Annotations" / "chair_imagenet" / "n0000_1.mat").unlink()
    with pytest.raises(sets.SetError, match="n0000_1.mat: annotation file not found"):
        sets.pascal3d(root)


# --- features, files, bad inputs -----------------------------------------------------------------


def test_feature_file_recomputes_the_same_score(tmp_path):
    rng = np.random.default_rng(1)
    feat = rng.normal(size=(30, 32)).astype(np.float32)
    s = sets.EvalSet(
        "x",
        [f"img{i}.png" for i in range(30)],
        np.repeat(np.arange(10), 3),
        np.repeat(np.arange(5), 6).astype(str),
    )
    write_features(tmp_path / "x.npz", feat, s)
    with np.load(tmp_path / "x.npz") as f:
        assert f["feat"].dtype == np.float32 and f["path"].tolist() == s.paths
        # what run_stage computes from the features it writes, recomputed from the file alone
        scores = set_contributions(f["feat"], f["instance"], f["classes"], 25, f["unit"]).full(
            (10, 25)
        )
        for k in (10, 25):
            assert reference_score(f["feat"], f["instance"], f["classes"], k) == pytest.approx(
                scores[k], abs=1e-6
            )


def test_features_and_bad_models(tmp_path):
    torch.manual_seed(0)
    net = backbone("resnet18")
    torch.save(plain_backbone_state(net), tmp_path / "r18.pt")
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        _image(tmp_path / f"{i}.png", value=40 * i)
    model = load_model(tmp_path / "r18.pt", "resnet18", "cpu")
    two = Loading("cpu", batch_size=2)
    feat = extract(model, paths, [None, (2, 2, 10, 10), None], 32, two)
    assert feat.shape == (3, 512) and np.isfinite(feat).all()
    again = extract(
        load_model(tmp_path / "r18.pt", "resnet18", "cpu"),
        paths,
        [None, (2, 2, 10, 10), None],
        32,
        two,
    )
    assert np.array_equal(feat, again)  # deterministic
    assert not np.allclose(feat[0], feat[1])  # the crop and the image both matter
    with pytest.raises(CheckpointError, match="r18.pt: does not fit the model"):
        load_model(tmp_path / "r18.pt", "resnet50", "cpu")  # another architecture
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(FeatureError, match="bad.png: cannot read image"):
        extract(model, [str(tmp_path / "bad.png")], None, 32, Loading("cpu"))
    # an official-MoCo-style checkpoint (DDP + encoder_q prefixes, a classifier) loads as a backbone
    official = {
        "state_dict": {f"module.encoder_q.{k}": v for k, v in plain_backbone_state(net).items()}
    }
    official["state_dict"]["module.encoder_q.fc.0.weight"] = torch.zeros(2, 512)
    official["state_dict"]["module.encoder_k.conv1.weight"] = torch.zeros(1)
    torch.save(official, tmp_path / "moco_v2_200ep.pth.tar")
    moco = load_model(tmp_path / "moco_v2_200ep.pth.tar", "resnet18", "cpu")
    assert np.allclose(extract(moco, paths[:1], None, 32, Loading("cpu")), feat[:1], atol=1e-5)
