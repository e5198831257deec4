from pathlib import Path

import numpy as np
import pytest

from demystify.data.got10k import (
    AnnotationError,
    anno_fps,
    read_annotations,
    read_boxes,
    read_meta,
    read_split,
    resolution,
)

META = "[METAINFO]\nobject_class: mug\nmotion_class: rotating\nanno_fps: 10Hz\nresolution: (160, 120)\n"


def write_seq(
    d: Path, boxes: str, cover: str | None = None, absence: str | None = None, meta: str = META
) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "groundtruth.txt").write_text(boxes)
    (d / "meta_info.ini").write_text(meta)
    if cover is not None:
        (d / "cover.label").write_text(cover)
    if absence is not None:
        (d / "absence.label").write_text(absence)
    return d


def test_split(tmp_path: Path):
    (tmp_path / "list.txt").write_text("GOT-10k_Train_000001\nGOT-10k_Train_000002\n\n")
    assert read_split(tmp_path) == ["GOT-10k_Train_000001", "GOT-10k_Train_000002"]


def test_split_missing(tmp_path: Path):
    with pytest.raises(AnnotationError, match="list.txt: file not found"):
        read_split(tmp_path)


def test_meta(tmp_path: Path):
    seq = write_seq(tmp_path / "s", "1,2,3,4\n")
    meta = read_meta(seq)
    assert meta["object_class"] == "mug"
    assert anno_fps(meta) == 10.0
    assert resolution(meta) == (160, 120)
    assert anno_fps({}) is None and resolution({}) is None


@pytest.mark.parametrize(
    "meta, where",
    [
        ("object_class: mug\n", "meta_info.ini:1"),
        ("[METAINFO]\nobject_class mug\n", "meta_info.ini:2"),
    ],
)
def test_meta_errors_name_file_and_line(tmp_path: Path, meta: str, where: str):
    seq = write_seq(tmp_path / "s", "1,2,3,4\n", meta=meta)
    with pytest.raises(AnnotationError, match=where):
        read_meta(seq)


def test_bad_anno_fps():
    with pytest.raises(AnnotationError, match="anno_fps"):
        anno_fps({"anno_fps": "fast"})


def test_annotations(tmp_path: Path):
    seq = write_seq(tmp_path / "s", "1,2,3,4\n5.5,6,7,8\n10,20,30,40\n", "8\n4\n0\n", "0\n0\n1\n")
    ann = read_annotations(seq)
    assert list(ann.columns) == ["frame", "x", "y", "w", "h", "cover", "absence"]
    assert ann["frame"].tolist() == [0, 1, 2]
    assert ann["x"].tolist() == [1.0, 5.5, 10.0]
    assert ann["cover"].tolist() == [8, 4, 0]
    assert ann["absence"].tolist() == [0, 0, 1]
    assert ann["x"].dtype == float and ann["cover"].dtype == np.int64


def test_annotations_defaults_without_labels(tmp_path: Path):
    ann = read_annotations(write_seq(tmp_path / "s", "1,2,3,4\n5,6,7,8\n"))
    assert ann["cover"].tolist() == [-1, -1]
    assert ann["absence"].tolist() == [0, 0]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("groundtruth.txt", "1,2,3,4\n1,2,three,4\n", r"groundtruth.txt:2: expected 'x,y,w,h'"),
        ("groundtruth.txt", "1,2,3\n", r"groundtruth.txt:1"),
        ("cover.label", "8\n9\n", r"cover.label:2: expected an integer in 0..8"),
        ("cover.label", "8\n", r"cover.label: 1 labels for 2 boxes"),
    ],
)
def test_a_bad_box_or_label_names_file_and_line(tmp_path: Path, name, text, expected):
    seq = write_seq(tmp_path / "s", "1,2,3,4\n5,6,7,8\n")
    (seq / name).write_text(text)
    with pytest.raises(AnnotationError, match=expected):
        read_annotations(seq)


def test_trackingnet_boxes(tmp_path: Path):
    txt = tmp_path / "anno" / "video_1.txt"
    txt.parent.mkdir()
    txt.write_text("1,2,3,4\n5,6,7,8\n")
    np.testing.assert_array_equal(read_boxes(txt), [[1, 2, 3, 4], [5, 6, 7, 8]])
    (tmp_path / "empty.txt").write_text("")
    assert read_boxes(tmp_path / "empty.txt").shape == (0, 4)
