"""Hostile inputs to the image and list readers (issue 17): symlinked and looping folders, list files
that are not UTF-8 or name paths outside their root, empty or corrupt .mat files, bad class tables.
Each is read by the real reader from real files: the reader raises its own error type naming the
file (a stage prints it as one line), or follows / skips with a reason; every good file is still read."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from demystify.core.images import IMAGE_SUFFIXES
from demystify.data import got10k
from demystify.evaluation import labelled, sets
from demystify.ssl import datasets

ROOT = Path(__file__).resolve().parents[1]
BAD_BYTES = b"name_ok\n\xff\xfebad\n"  # not UTF-8 on line 2


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link, target_is_directory=True)


# --- recursive image listing (pretrain corpora, the kNN monitor) ---------------------------------


def test_listing_without_symlinks_is_sorted_rglob(tmp_path):
    """The order the committed results depend on: Path-sorted, exactly what rglob gave."""
    for rel in (
        "b/x.png",
        "a/2.jpg",
        "a/10.JPG",
        "a/sub/1.png",
        "a-b/0.png",
        "a.b/0.jpeg",
        "top.png",
        "a/notes.txt",
        ".hidden/3.png",
    ):
        _png(tmp_path / rel) if not rel.endswith(".txt") else (tmp_path / rel).write_text("x")
    old = sorted(p for p in tmp_path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    assert datasets._images(tmp_path) == old and len(old) == 8


def test_symlinked_class_folders_are_followed(tmp_path):
    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    _png(corpus / "cat" / "1.png")
    _png(elsewhere / "dog" / "1.png")
    _png(elsewhere / "dog" / "deeper" / "2.png")
    _png(elsewhere / "fish" / "1.png")
    _link(elsewhere / "dog", corpus / "dog")
    _link(elsewhere / "fish", corpus / "nested" / "fish")
    items, classes = datasets.image_items(corpus, labelled=True)
    paths = [Path(it.path_a).relative_to(corpus).as_posix() for it in items]
    assert paths == ["cat/1.png", "dog/1.png", "dog/deeper/2.png", "nested/fish/1.png"]
    assert classes == ["cat", "deeper", "dog", "fish"]  # the parent folder's name, as before


def test_symlink_loop_terminates_and_is_reported(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    _png(corpus / "a" / "1.png")
    _png(corpus / "b" / "2.png")
    _link(corpus, corpus / "a" / "back_to_root")  # a/back_to_root -> corpus: a loop
    _link(
        corpus / "a" / "self", corpus / "a" / "self"
    )  # a link to itself: broken, a file, not an image
    paths = [p.relative_to(corpus).as_posix() for p in datasets._images(corpus)]
    assert paths == [
        "a/1.png",
        "b/2.png",
    ]  # the link leads to one of its own ancestors: not entered
    err = capsys.readouterr().err
    assert "symlink loop" in err and "back_to_root" in err


def test_unlistable_folder_is_named(tmp_path, monkeypatch):
    _png(tmp_path / "ok" / "1.png")
    (tmp_path / "locked").mkdir()
    scandir = os.scandir

    def refusing(path):  # chmod 0 does not stop root, so refuse as the OS would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(
        datasets.DataError, match=r"locked: cannot list folder \(Permission denied\)"
    ):
        datasets._images(tmp_path)


def test_one_level_readers_follow_symlinked_folders(tmp_path):
    """folder_classification (ImageFolder splits) and ALOI list one level with is_dir(), which follows links."""
    elsewhere = tmp_path / "elsewhere"
    _png(tmp_path / "cls" / "train" / "cat" / "1.png")
    _png(elsewhere / "dog" / "1.png")
    _link(elsewhere / "dog", tmp_path / "cls" / "train" / "dog")
    data = labelled.folder_classification(tmp_path / "cls", "train")
    assert data.classes == ["cat", "dog"] and len(data.paths) == 2
    for obj in (1, 2):
        _png(elsewhere / "aloi" / str(obj) / f"{obj}_r0.png")
    _png(tmp_path / "aloi_red2_view" / "png2" / "3" / "3_r0.png")
    for obj in (1, 2):
        _link(elsewhere / "aloi" / str(obj), tmp_path / "aloi_red2_view" / "png2" / str(obj))
    assert sets.aloi(tmp_path, "view").instance.tolist() == [1, 2, 3]


def test_pairs_manifest_paths_stay_in_the_frames_folder(tmp_path):
    import pandas as pd

    frames = tmp_path / "frames"
    _png(frames / "v" / "1.jpg")
    _png(frames / "v" / "2.jpg")
    _png(tmp_path / "secret.jpg")  # a real image outside the frames folder
    box = {f"{v}_{c}": [0.0] for v in "ab" for c in "xywh"}
    manifest = tmp_path / "pairs.parquet"
    pd.DataFrame({"path_a": ["v/1.jpg"], "path_b": ["v/2.jpg"], **box}).to_parquet(manifest)
    assert len(datasets.pair_items(manifest, frames, crops=True)) == 1
    for bad in ("../secret.jpg", str(tmp_path / "secret.jpg"), None):
        pd.DataFrame({"path_a": ["v/1.jpg"], "path_b": [bad], **box}).to_parquet(manifest)
        with pytest.raises(
            datasets.DataError, match=r"pairs\.parquet: 1 frame path\(s\) point outside"
        ):
            datasets.pair_items(manifest, frames, crops=False)
    pd.DataFrame({"path_a": ["v/1.jpg"], "path_b": ["v/2.jpg"]}).to_parquet(manifest)
    with pytest.raises(
        datasets.DataError, match=r"pairs\.parquet: not a pairs manifest \(no column a_x"
    ):
        datasets.pair_items(manifest, frames, crops=True)
    manifest.write_bytes(b"PAR1 not really")
    with pytest.raises(datasets.DataError, match=r"pairs\.parquet: not a readable parquet file"):
        datasets.pair_items(manifest, frames, crops=False)


# --- GOT-10k list.txt ----------------------------------------------------------------------------


def _got_split(root: Path, names: list[str]) -> None:
    for name in names:
        seq = root / name
        seq.mkdir(parents=True, exist_ok=True)
        (seq / "meta_info.ini").write_text("[METAINFO]\nobject_class: mug\n")
        (seq / "groundtruth.txt").write_text("1,1,4,4\n" * 5)
        (seq / "cover.label").write_text("0\n2\n4\n6\n8\n")
        for t in range(5):
            _png(seq / f"{t + 1:08d}.jpg")


@pytest.mark.parametrize("entry", ["../outside", "/etc", "seq/../../outside", "a\0b"])
def test_got10k_list_entry_outside_the_split_is_named(tmp_path, entry):
    root = tmp_path / "train"
    _got_split(root, ["seq1"])
    _got_split(tmp_path, ["outside"])  # a real sequence one level up: it must not be read
    (root / "list.txt").write_text(f"seq1\n{entry}\n")
    with pytest.raises(got10k.AnnotationError, match=r"list\.txt: entry .* points outside"):
        got10k.read_split(root)
    with pytest.raises(sets.SetError, match=r"train/list\.txt: entry .* points outside"):
        sets.got10k_occlusion(root)


def test_got10k_list_not_utf8_is_named(tmp_path):
    root = tmp_path / "train"
    _got_split(root, ["name_ok"])
    (root / "list.txt").write_bytes(BAD_BYTES)
    with pytest.raises(sets.SetError, match=r"list\.txt:2: not UTF-8 text \(byte 0xff\)"):
        sets.got10k_occlusion(root)
    (root / "list.txt").write_text("name_ok\r\n")  # CRLF lists still read
    assert len(sets.got10k_occlusion(root)) == 5
    (root / "list.txt").unlink()
    (root / "list.txt").mkdir()
    with pytest.raises(sets.SetError, match=r"list\.txt: cannot read"):
        sets.got10k_occlusion(root)


# --- PASCAL3D+ -----------------------------------------------------------------------------------


def _pascal3d(root: Path, names: list[str]) -> None:
    for name in names:
        _png(root / "Images" / "car_imagenet" / f"{name}.JPEG")
        objects = np.zeros((1, 1), dtype=[("bbox", object), ("viewpoint", object)])
        objects[0, 0] = (
            np.array([[1.0, 1.0, 6.0, 6.0]]),
            {"azimuth_coarse": 40.0, "elevation_coarse": 10.0},
        )
        path = root / "Annotations" / "car_imagenet" / f"{name}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        savemat(path, {"record": {"objects": objects}})
    (root / "Image_sets").mkdir(parents=True, exist_ok=True)
    (root / "Image_sets" / "car_imagenet_train.txt").write_text(
        "".join(f"{n}\n" for n in names[:-1])
    )
    (root / "Image_sets" / "car_imagenet_val.txt").write_text(f"{names[-1]}\n")


def test_pascal3d_good_then_hostile(tmp_path):
    root = tmp_path / "P3D"
    _pascal3d(root, ["a", "b", "c"])
    assert len(sets.pascal3d(root)["pascal3d_instance"]) == 3
    ann = root / "Annotations" / "car_imagenet"

    (ann / "b.mat").write_bytes(b"")
    with pytest.raises(sets.SetError, match=r"b\.mat: not a readable MATLAB \.mat file"):
        sets.pascal3d(root)
    (ann / "b.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 4)
    with pytest.raises(sets.SetError, match=r"b\.mat: not a readable MATLAB \.mat file"):
        sets.pascal3d(root)
    savemat(ann / "b.mat", {"something_else": np.ones(3)})
    with pytest.raises(sets.SetError, match=r"b\.mat: not a PASCAL3D\+ annotation"):
        sets.pascal3d(root)
    _pascal3d(root, ["a", "b", "c"])

    lists = root / "Image_sets"
    (lists / "car_imagenet_val.txt").write_bytes(b"c\n\xc3\x28\n")
    with pytest.raises(sets.SetError, match=r"car_imagenet_val\.txt:2: not UTF-8"):
        sets.pascal3d(root)
    _pascal3d(tmp_path, ["secret"])  # a real annotated image outside the root
    (lists / "car_imagenet_val.txt").write_text("c\n../../Annotations/car_imagenet/secret\n")
    with pytest.raises(
        sets.SetError, match=r"car_imagenet_val\.txt: entry '\.\./\.\./.*secret' points outside"
    ):
        sets.pascal3d(root)
    (lists / "car_imagenet_val.txt").write_text(f"{tmp_path}/Annotations/car_imagenet/secret\n")
    with pytest.raises(sets.SetError, match="points outside"):
        sets.pascal3d(root)
    (lists / "car_imagenet_val.txt").write_text("c\n")

    (lists / "car_pascal.txt").write_text("\nb\n")
    with pytest.raises(
        sets.SetError, match=r"car_pascal\.txt:2: expected 'name box_index', got 'b'"
    ):
        sets.pascal3d(root)
    (lists / "car_pascal.txt").write_text("a -1\n")
    with pytest.raises(sets.SetError, match=r"car_pascal\.txt:1: expected 'name box_index'"):
        sets.pascal3d(root)
    (lists / "car_pascal.txt").write_text("../car_imagenet/a 0\n")
    with pytest.raises(
        sets.SetError, match=r"car_pascal\.txt:1: entry '\.\./car_imagenet/a' points outside"
    ):
        sets.pascal3d(root)


# --- labelled sets (classification / segmentation) ----------------------------------------------


def test_voc_lists(tmp_path):
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for cls in labelled.VOC_CLASSES:
        (main / f"{cls}_trainval.txt").write_text("000001 1\n000002 -1\n")
    assert len(labelled.voc07_classification(tmp_path, "trainval").paths) == 2
    (main / "cat_trainval.txt").write_bytes(b"000001 1\n\xff 1\n")
    with pytest.raises(labelled.LabelError, match=r"cat_trainval\.txt:2: not UTF-8"):
        labelled.voc07_classification(tmp_path, "trainval")
    for cls in labelled.VOC_CLASSES:
        (main / f"{cls}_trainval.txt").write_text("000001 1\n../../etc/x -1\n")
    with pytest.raises(
        labelled.LabelError,
        match=r"aeroplane_trainval\.txt: entry '\.\./\.\./etc/x' points outside",
    ):
        labelled.voc07_classification(tmp_path, "trainval")

    seg = tmp_path / "ImageSets" / "Segmentation"
    seg.mkdir(parents=True)
    (seg / "val.txt").write_text("2007_000032\n2007_000033\n")
    assert len(labelled.voc2012_segmentation(tmp_path, "val").images) == 2
    for bad in ("/abs/olute", "../up"):
        (seg / "val.txt").write_text(f"2007_000032\n{bad}\n")
        with pytest.raises(labelled.LabelError, match=r"val\.txt: entry .* points outside"):
            labelled.voc2012_segmentation(tmp_path, "val")
    (seg / "val.txt").write_bytes(BAD_BYTES)
    with pytest.raises(labelled.LabelError, match=r"val\.txt:2: not UTF-8"):
        labelled.voc2012_segmentation(tmp_path, "val")


def test_world_and_ade20k_tables(tmp_path):
    _png(tmp_path / "train" / "images" / "0.png")
    (tmp_path / "classes.txt").write_bytes(b"background\ncaf\xe9\n")  # latin-1, not UTF-8
    with pytest.raises(labelled.LabelError, match=r"classes\.txt:2: not UTF-8"):
        labelled.world_segmentation(tmp_path, "train")
    (tmp_path / "classes.txt").write_text("background\ncafé\n")
    assert labelled.world_segmentation(tmp_path, "train").classes == ["background", "café"]

    ade = tmp_path / "ade"
    _png(ade / "images" / "training" / "a.jpg")
    (ade / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall\n")
    assert labelled.ade20k_segmentation(ade, "train", num_classes=1).classes == ["wall"]
    for content in (b"", b"Idx,Ratio\n1,0.1\n", b"Idx,Name\n1,\xff\xfe\n"):
        (ade / "objectInfo150.csv").write_bytes(content)
        with pytest.raises(
            labelled.LabelError, match=r"objectInfo150\.csv: not ADE20K's class table"
        ):
            labelled.ade20k_segmentation(ade, "train")


# --- as the stage reports it ---------------------------------------------------------------------


def test_evaluate_stage_prints_one_line(tmp_path, monkeypatch, capsys):
    """stages/evaluate.py on a GOT-10k split whose list.txt leaves it: exit 1, one line naming list.txt."""
    for kind in ("view", "ill", "col"):
        _png(tmp_path / "aloi" / f"aloi_red2_{kind}" / "png2" / "1" / "1_r0.png")
    _got_split(tmp_path / "got", ["seq1"])
    (tmp_path / "got" / "list.txt").write_text("seq1\n../../../etc\n")
    spec = importlib.util.spec_from_file_location(
        "evaluate_stage_script", ROOT / "stages" / "evaluate.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.chdir(ROOT)  # params.yaml
    rc = script.main(
        [
            "invariance",
            "moco_tracker",
            "--backbone",
            str(tmp_path / "none.pt"),
            "--aloi",
            str(tmp_path / "aloi"),
            "--got10k",
            str(tmp_path / "got"),
            "--pascal3d",
            str(tmp_path / "p3d"),
            "--out",
            str(tmp_path / "o1"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "Traceback" not in err
    assert (
        err.startswith("evaluate_invariance@moco_tracker: ")
        and "got/list.txt: entry '../../../etc'" in err
    )
