"""Every reader sees an image alike: 8 bits per channel whatever the file's depth or mode, one list
of image suffixes (a file skipped for its suffix is named), a pixel cap read from the header
before decoding, batches built from each view's crop (equal to the whole-image batches), a
loader worker's error as the one line it is without workers, and a streamed corpus's headers
checked before training."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

from demystify.core import images
from demystify.core.config import PretrainParams, VariantParams
from demystify.evaluation import sets
from demystify.evaluation.features import FeatureError, read_rgb
from demystify.evaluation.labelled import folder_classification
from demystify.ssl import batch_augment as ba
from demystify.ssl import datasets, train
from demystify.ssl.datasets import DataError, DecodedViews, Item, collate_views, image_items
from demystify.ssl.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]


def _pattern(h: int = 12, w: int = 16) -> np.ndarray:
    """(h, w, 3) uint8 RGB, every pixel different."""
    y, x = np.mgrid[:h, :w]
    return np.stack([(7 * x + 3 * y) % 256, (5 * y + 11) % 256, (x * y + 40) % 256], axis=2).astype(
        np.uint8
    )


def _save(path: Path, rgb: np.ndarray, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).convert(mode).save(path)
    return path


# --- depth and mode: 8 bits per channel, RGB ---------------------------------------------------


def test_16_bit_pngs_reach_training_and_evaluation_at_8_bits(tmp_path):
    rgb = _pattern()
    eight = _save(tmp_path / "c" / "eight.png", rgb)
    sixteen = tmp_path / "c" / "sixteen.png"
    cv2.imwrite(str(sixteen), rgb[..., ::-1].astype(np.uint16) * 257)  # cv2 writes BGR
    grey16 = tmp_path / "c" / "grey16.png"
    cv2.imwrite(str(grey16), rgb[..., 0].astype(np.uint16) * 257)
    red = tmp_path / "c" / "red.png"  # the tester's constant red 200, at 16 bits
    cv2.imwrite(
        str(red),
        np.dstack([np.zeros((8, 8)), np.zeros((8, 8)), np.full((8, 8), 200 * 257)]).astype(
            np.uint16
        ),
    )

    expected = torch.from_numpy(rgb).permute(2, 0, 1)
    items, _ = image_items(tmp_path)
    views = DecodedViews(items, seed=0)  # what training holds, as it decoded it
    decoded = {Path(p).name: img for p, img in views._decoded.items()}
    for reader in (lambda p: decoded[p.name], lambda p: read_rgb(str(p)), images.decode_rgb):
        assert torch.equal(reader(eight), expected)
        assert torch.equal(reader(sixteen), expected)  # not the low byte
        assert torch.equal(reader(grey16), expected[:1].expand(3, -1, -1))
        red8 = reader(red)
        assert (
            red8.dtype == torch.uint8 and red8[0].unique().tolist() == [200] and red8[1:].max() == 0
        )

    between = tmp_path / "between.png"  # a grey that is no multiple of 257: scaled and rounded
    cv2.imwrite(str(between), np.array([[0, 255, 32767, 51600, 65535]], np.uint16))
    assert images.decode_rgb(between)[0, 0].tolist() == [0, 1, 127, 201, 255]


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1"])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode):
    rgb = _pattern()
    path = _save(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"), rgb, mode)
    with Image.open(path) as im:
        reference = np.array(im.convert("RGB"))
    out = images.decode_rgb(path)
    assert out.dtype == torch.uint8 and out.shape == (3, 12, 16)
    assert torch.equal(out, torch.from_numpy(reference).permute(2, 0, 1))
    if mode in ("RGBA", "LA"):  # the colour kept, the alpha dropped
        assert torch.equal(
            out,
            images.decode_rgb(_save(tmp_path / "y.png", rgb, mode[:-1] if mode == "LA" else "RGB")),
        )


# --- one list of image suffixes -----------------------------------------------------------------


def test_every_listed_suffix_decodes(tmp_path):
    rgb = _pattern()
    for suffix in images.IMAGE_SUFFIXES:
        path = tmp_path / f"x{suffix}"
        Image.fromarray(rgb).save(path, **({"lossless": True} if suffix == ".webp" else {}))
        out = images.decode_rgb(path)
        assert out.shape == (3, 12, 16), suffix
        if suffix not in (".jpg", ".jpeg", ".pgm"):  # lossless (a .pgm written by Pillow is grey)
            assert torch.equal(out, torch.from_numpy(rgb).permute(2, 0, 1)), suffix


def test_a_bmp_class_is_read_by_training_and_every_evaluation_reader(tmp_path, capsys):
    split = tmp_path / "train"
    suffixes = [".png", ".jpg", ".bmp", ".ppm", ".webp", ".tif", ".png", ".bmp"]
    for c, suffix in enumerate(suffixes):
        for i in range(2):
            _save(split / f"class{c}" / f"{i}{suffix}", np.roll(_pattern(), c + i, axis=1))
    items, classes = image_items(split, labelled=True)
    probe = folder_classification(tmp_path, "train")
    assert classes == probe.classes == [f"class{c}" for c in range(8)]  # 8 classes, none dropped
    assert [it.path_a for it in items] == probe.paths and len(items) == 16
    assert [it.label for it in items] == probe.single_label.tolist()
    aloi = tmp_path / "aloi_red2_view" / "png2"  # the invariance reader: object folders
    for c, suffix in enumerate(suffixes):
        _save(aloi / str(c + 1) / f"{c + 1}_r0{suffix}", _pattern())
    assert len(sets.aloi(tmp_path, "view").paths) == 8
    assert "skipped" not in capsys.readouterr().err  # nothing left out, nothing reported


def test_files_skipped_for_their_suffix_are_counted_and_named(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    for i in range(3):
        _save(corpus / "cat" / f"{i}.png", _pattern())
    (corpus / "cat" / "notes.txt").write_text("x")
    (corpus / "cat" / "README").write_text("x")
    _save(corpus / "cat" / "anim.gif", _pattern())
    (corpus / "annotations.csv").write_text("path,instance\n")  # a known side file: not reported
    (corpus / ".gitkeep").write_text("")
    items, _ = image_items(corpus)
    assert len(items) == 3  # every image kept
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"corpus {corpus}: skipped 3 file(s) that are not images by suffix "
        "(.gif: cat/anim.gif; .txt: cat/notes.txt; no suffix: cat/README;"
    )
    assert "annotations.csv" not in err[0] and ".gitkeep" not in err[0]

    (tmp_path / "split" / "dog").mkdir(parents=True)
    _save(tmp_path / "split" / "dog" / "0.png", _pattern())
    (tmp_path / "split" / "dog" / "a.txt").write_text("x")
    assert len(folder_classification(tmp_path, "split").paths) == 1
    assert (
        "skipped 1 file(s) that are not images by suffix (.txt: dog/a.txt;"
        in capsys.readouterr().err
    )


# --- the pixel cap ------------------------------------------------------------------------------


def test_an_image_over_the_pixel_cap_is_named_before_decoding(tmp_path, monkeypatch):
    small, big = (
        _save(tmp_path / "c" / "a.png", _pattern(8, 8)),
        _save(tmp_path / "c" / "b.png", _pattern(20, 30)),
    )
    monkeypatch.setattr(images, "MAX_PIXELS", 400)
    decoded = []
    real = images._rgb8
    monkeypatch.setattr(images, "_rgb8", lambda im: decoded.append(im.size) or real(im))
    with pytest.raises(
        images.ImageError, match=r"b\.png: image of 30x20 = 600 pixels is over the cap of 400"
    ):
        images.decode_rgb(big)
    assert decoded == []  # refused from its header
    with pytest.raises(FeatureError, match=r"b\.png: image of 30x20"):
        read_rgb(str(big))
    assert images.decode_rgb(small).shape == (3, 8, 8)  # under the cap: read as before
    variant = VariantParams(method="moco", positives="images", data=str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"b\.png: image of 30x20 = 600 pixels is over the cap"):
        train.build_data(variant, _pretrain(), resident_mb=0)


def test_one_box_rounding_for_training_views_and_evaluation_crops(tmp_path):
    """core.images.box_bounds, which both pretraining's view regions and the evaluations' crops use,
    is the rounding each had: outwards to whole pixels, clipped, the whole image under 2 pixels."""

    def written_out(box, w, h):  # the rounding as ssl/datasets.py and evaluation read_rgb had it
        x, y, bw, bh = box
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
        return None if x1 - x0 < 2 or y1 - y0 < 2 else (x0, y0, x1, y1)

    rng = np.random.default_rng(0)
    boxes = [tuple(v) for v in rng.uniform(-8, 40, size=(500, 4))]
    boxes += [(2, 2, 10, 10), (0.5, 0.5, 1.2, 20), (-3, -3, 100, 100), (31.9, 0, 5, 5)]
    img = torch.zeros(3, 24, 32, dtype=torch.uint8)
    for box in boxes:
        assert images.box_bounds(box, 32, 24) == written_out(box, 32, 24), box
        x0, y0, x1, y1 = written_out(box, 32, 24) or (0, 0, 32, 24)
        assert datasets._region(img, box) == (x0, y0, x1, y1)
    path = _save(tmp_path / "a.png", _pattern(24, 32))
    assert read_rgb(str(path), (2.5, 3.0, 10.2, 7.0)).shape == (3, 7, 11)
    assert read_rgb(str(path), (2.5, 3.0, 0.4, 7.0)).shape == (3, 24, 32)  # under 2 pixels wide
    with pytest.raises(FeatureError, match=r"a\.png: crop box .* is not finite"):
        read_rgb(str(path), (float("nan"), 0.0, 5.0, 5.0))


# --- batches from crops -------------------------------------------------------------------------


def _padded_reference(samples: list[dict]) -> dict[str, torch.Tensor]:
    """The collate before crops (whole images, each padded to the largest), kept to compare with."""
    slots: dict[str, int] = {}
    imgs: list[torch.Tensor] = []
    for s in samples:
        for path, img in zip(s["paths"], s["images"], strict=True):
            if path not in slots:
                slots[path] = len(imgs)
                imgs.append(img)
    h, w = max(im.shape[1] for im in imgs), max(im.shape[2] for im in imgs)
    stack = torch.empty(len(imgs), 3, h, w, dtype=torch.uint8)
    for k, im in enumerate(imgs):
        ih, iw = im.shape[1:]
        stack[k, :, :ih, :iw] = im
        stack[k, :, ih:, :iw] = im[:, -1:, :]
        stack[k, :, :, iw:] = stack[k, :, :, iw - 1 : iw]
    views = len(samples[0]["paths"])
    return {
        "images": stack,
        "sources": torch.tensor([[slots[s["paths"][v]] for s in samples] for v in range(views)]),
        "regions": torch.tensor(
            [[s["regions"][v] for s in samples] for v in range(views)], dtype=torch.float64
        ),
        "uniforms": torch.from_numpy(np.stack([s["uniforms"] for s in samples], axis=1)),
    }


def _mixed_items(tmp_path: Path) -> list[Item]:
    """Images of the world's sizes (64 x 64 corpus images, 128 x 128 scenes, 160 x 120 frames as JPEG)
    and a bigger one, drawn here so a fresh clone runs this without the world built; some with a
    crop box, some cut at the image's edge."""
    rng = np.random.default_rng(0)
    paths = []
    for k, (w, h, suffix) in enumerate(
        [(64, 64, ".png")] * 5
        + [(128, 128, ".png")] * 5
        + [(160, 120, ".jpg")] * 5
        + [(420, 300, ".png")]
    ):
        img = cv2.GaussianBlur(
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3
        )  # texture, not noise
        cv2.rectangle(
            img, (w // 4, h // 4), (w // 2 + k, h // 2 + k), (int(rng.integers(256)), 40, 200), -1
        )
        cv2.imwrite(str(tmp_path / f"{k:02d}{suffix}"), img)
        paths.append(tmp_path / f"{k:02d}{suffix}")
    boxes = [None, (3.2, 4.0, 30.5, 20.0), (40.0, 30.0, 88.0, 98.0), None]
    return [Item(str(p), box_a=boxes[i % 4]) for i, p in enumerate(paths)]


@pytest.mark.parametrize(
    "method, size, min_scale", [("moco", 48, 0.5), ("moco", 96, 0.2), ("supervised", 32, 0.2)]
)
def test_crop_batches_equal_whole_image_batches(tmp_path, monkeypatch, method, size, min_scale):
    aug = ba.for_method(method, size, min_scale)
    dataset = DecodedViews(_mixed_items(tmp_path), seed=5, labelled=method == "supervised")
    samples = [dataset[(i, 3)] for i in range(len(dataset))]
    whole = _padded_reference(samples)
    assert all(
        torch.equal(whole[k], v)
        for k, v in collate_views(samples, aug.crop_boxes).items()
        if k in whole
    )
    monkeypatch.setattr(datasets, "WHOLE_BATCH_BYTES", 0)  # force the crops
    crops = collate_views(samples, aug.crop_boxes)
    assert crops["images"].numel() < whole["images"].numel() / 2
    for v in range(len(whole["sources"])):
        old = aug(whole["images"], whole["sources"][v], whole["regions"][v], whole["uniforms"][v])
        new = aug(crops["images"], crops["sources"][v], crops["regions"][v], crops["uniforms"][v])
        # the same pixels read; roi_align rounds its float32 sample positions at other coordinates
        # (~1e-5 of a pixel): 2e-5 of the [0, 1] range after normalising (std ~0.22) at sharp edges;
        # the error scales with the image's gradient (blurred noise at sigma 1: 2e-4; here sigma 3)
        assert torch.allclose(old, new, atol=1e-4, rtol=0), (old - new).abs().max()
        assert (old - new).abs().mean() < 1e-6
        if method == "supervised":  # crop, resize and flip alone: within 1e-5
            assert torch.allclose(old, new, atol=1e-5, rtol=0)


def test_one_huge_image_no_longer_pads_its_batch(tmp_path):
    """A batch of 8 small images and a large one: the whole-image batch is 9 large images, the crop
    batch a page for the large crop and one for the small ones; the same views either way."""
    paths = [
        _save(tmp_path / f"{i}.png", np.roll(_pattern(48, 64), 3 * i, axis=0)) for i in range(8)
    ]
    paths.append(_save(tmp_path / "huge.png", cv2.resize(_pattern(48, 64), (2600, 2000))))
    aug = ba.for_method("moco", 32, 0.2)
    dataset = DecodedViews([Item(str(p)) for p in paths], seed=1)
    batch = collate_views([dataset[(i, 0)] for i in range(len(paths))], aug.crop_boxes)
    assert (
        batch["images"].numel() <= 2 * 3 * 2002 * 2602
        and batch["images"].numel() < 9 * 3 * 2000 * 2600 / 4
    )
    single = collate_views([dataset[(0, 0)]], aug.crop_boxes)  # sample 0 alone: whole images
    for v in range(2):
        alone = aug(
            single["images"], single["sources"][v], single["regions"][v], single["uniforms"][v]
        )
        inside = aug(
            batch["images"], batch["sources"][v], batch["regions"][v], batch["uniforms"][v]
        )[:1]
        assert torch.allclose(alone, inside, atol=1e-4, rtol=0)


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(
        datasets, "WHOLE_BATCH_BYTES", 0
    )  # the crop path (workers inherit it by fork)
    dataset = DecodedViews(_mixed_items(tmp_path), seed=2, resident=False)
    collate = functools.partial(collate_views, crop_boxes=ba.for_method("moco", 48, 0.5).crop_boxes)

    def batches(workers: int) -> list[dict]:
        sampler = train.StreamSampler(len(dataset), 4, Runtime(), seed=0)
        sampler.set_range(0, 3)
        loader = DataLoader(
            dataset, batch_size=4, sampler=sampler, collate_fn=collate, num_workers=workers
        )
        return list(train._batches(loader))

    for a, b in zip(batches(0), batches(2), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- loader workers and the streamed corpus ------------------------------------------------------


def _pretrain(**change) -> PretrainParams:
    values = yaml.safe_load((ROOT / "params.yaml").read_text())["pretrain"]
    return PretrainParams(**(values | change))


def _truncated_png(path: Path) -> Path:
    """A PNG whose header reads (size, mode) but whose pixels are cut off."""
    _save(path, _pattern(40, 40))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_worker_error_is_the_one_line_it_is_without_workers(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", _pattern())
    _truncated_png(tmp_path / "3.png")
    items, _ = image_items(tmp_path)
    dataset = DecodedViews(items, seed=0, resident=False)
    collate = functools.partial(collate_views, crop_boxes=ba.for_method("moco", 32, 0.5).crop_boxes)
    messages = []
    for workers in (0, 1):
        loader = DataLoader(dataset, batch_size=4, collate_fn=collate, num_workers=workers)
        with pytest.raises(DataError) as caught:
            list(train._batches(loader))
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "\n" not in messages[1] and messages[1].startswith(
        f"{tmp_path / '3.png'}: cannot read image"
    )
    assert train.worker_message("plain message") == "plain message"


def test_a_streamed_corpus_is_checked_before_training(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(4):
        _save(corpus / "cat" / f"{i}.png", _pattern())
    variant = VariantParams(method="moco", positives="images", data=str(corpus))
    dataset, _, files = train.build_data(variant, _pretrain(), resident_mb=0)
    assert not dataset.resident and len(dataset) == 4 and len(files) == 4  # a good corpus streams

    (corpus / "cat" / "2.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"cat/2\.png: cannot read image \(UnidentifiedImageError"):
        train.build_data(variant, _pretrain(), resident_mb=0)


def test_the_resident_estimate_reads_every_header(tmp_path):
    """The first image small, the second large: the first image's size alone would call the corpus
    small enough to hold."""
    corpus = tmp_path / "corpus"
    _save(corpus / "a.png", _pattern(8, 8))
    _save(corpus / "b.png", cv2.resize(_pattern(), (1000, 800)))
    variant = VariantParams(method="moco", positives="images", data=str(corpus))
    assert not train.build_data(variant, _pretrain(), resident_mb=2)[0].resident  # 2.4 MB > 2 MB
    assert train.build_data(variant, _pretrain(), resident_mb=3)[0].resident
    assert train._fits_in_memory({"a": (8, 8), "b": (1000, 800)}, 3)
    assert not train._fits_in_memory({"a": (8, 8), "b": (1000, 800)}, 2)
