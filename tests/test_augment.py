"""The batched, in-process MoCo v2 augmentation against torchvision's per-image one (augment.mocov2):
the same operations given the same parameters, the same distribution of crops, colours, grayscale
and flips, and per-sample randomness that does not depend on the batch; and the supervised
baseline's crop and flip only (augment.crop_flip), colours untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torchvision import transforms as T1
from torchvision.io import write_png
from torchvision.transforms.v2 import functional as TF

from demystify.ssl import batch_augment as ba
from demystify.ssl.augment import IMAGENET_MEAN, IMAGENET_STD, crop_flip, mocov2
from demystify.ssl.datasets import DecodedViews, Item, collate_views

MEAN, STD = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]


def _uniforms(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.stack([ba.sample_uniforms(seed, 0, i, 1)[0] for i in range(n)]))


def _probe_image(h: int = 48, w: int = 64) -> torch.Tensor:
    """uint8 [3, h, w]: a bright, coloured left half (a hue ramp) and a dark right half, so a view
    shows whether it was flipped (which side is brighter), how colourful it is, and its brightness."""
    img = torch.zeros(3, h, w)
    ramp = torch.linspace(0, 1, h)[:, None].expand(h, w // 2)
    img[0, :, : w // 2], img[1, :, : w // 2], img[2, :, : w // 2] = (
        0.9,
        0.3 + 0.6 * ramp,
        0.9 - 0.8 * ramp,
    )
    img[:, :, w // 2 :] = 0.1
    return (img * 255).round().to(torch.uint8)


@pytest.mark.parametrize(
    "op, reference",
    [
        (ba.brightness, TF.adjust_brightness),
        (ba.contrast, TF.adjust_contrast),
        (ba.saturation, TF.adjust_saturation),
        (ba.hue, TF.adjust_hue),
    ],
)
def test_colour_operations_equal_torchvisions_per_sample(op, reference):
    x = torch.rand(16, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    factors = torch.linspace(-0.1, 0.1, 16) if op is ba.hue else torch.linspace(0.6, 1.4, 16)
    expected = torch.stack([reference(x[i], float(factors[i])) for i in range(16)])
    assert torch.allclose(op(x, factors), expected, atol=1e-5)


def test_crop_and_resize_equal_torchvisions_for_the_same_box():
    images = torch.stack([_probe_image(), _probe_image().flip(-2)])
    for size in (32, 80):  # shrinking (antialiased) and enlarging
        aug = ba.BatchMoCoV2(size, 0.2, jitter_p=0, gray_p=0, blur_p=0, flip_p=0)
        u = _uniforms(40)
        sources = torch.arange(40) % 2
        regions = torch.tensor([[0, 0, 64, 48]] * 40, dtype=torch.float64)
        out = aug(images, sources, regions, u) * STD + MEAN
        boxes = aug.crop_boxes(regions, u).long()
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            expected = TF.resized_crop(
                images[sources[i]], y0, x0, y1 - y0, x1 - x0, [size, size], antialias=True
            )
            assert (out[i] - expected.float() / 255).abs().mean() < 0.01, (size, i)


def test_crop_parameters_have_torchvisions_distribution():
    n, h, w = 3000, 48, 64
    ours = ba.BatchMoCoV2(32, 0.2).crop_boxes(
        torch.tensor([[0, 0, w, h]] * n, dtype=torch.float64), _uniforms(n)
    )
    torch.manual_seed(0)
    theirs = torch.tensor(
        [
            T1.RandomResizedCrop.get_params(torch.zeros(3, h, w), (0.2, 1.0), (3 / 4, 4 / 3))
            for _ in range(n)
        ],
        dtype=torch.float64,
    )  # (top, left, height, width)
    theirs = torch.stack(
        [theirs[:, 1], theirs[:, 0], theirs[:, 1] + theirs[:, 3], theirs[:, 0] + theirs[:, 2]], 1
    )
    for name, f in {
        "area": lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]),
        "aspect": lambda b: (b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1]),
        "centre x": lambda b: b[:, 0] + b[:, 2],
        "centre y": lambda b: b[:, 1] + b[:, 3],
    }.items():
        assert ks_2samp(f(ours).numpy(), f(theirs).numpy()).pvalue > 0.001, name


def _statistics(views: torch.Tensor) -> dict[str, np.ndarray]:
    """Per view: brightness, colourfulness, sharpness (of the step between the halves: blur), grayscale
    or not, flipped or not."""
    x = views * STD + MEAN
    half = x.shape[-1] // 2
    return {
        "brightness": x.mean((1, 2, 3)).numpy(),
        "colourfulness": x.std(1).mean((1, 2)).numpy(),
        "sharpness": x.diff(dim=-1).abs().amax((1, 2, 3)).numpy(),
        "gray": ((x.amax(1) - x.amin(1)).amax((1, 2)) < 2 / 255).numpy(),
        "flipped": (x[..., :half].mean((1, 2, 3)) < x[..., half:].mean((1, 2, 3))).numpy(),
    }


def test_whole_pipeline_matches_the_per_image_one_in_distribution():
    n, size = 1500, 32
    img = _probe_image()
    batched = ba.BatchMoCoV2(size, 0.5)(
        img[None],
        torch.zeros(n, dtype=torch.long),
        torch.tensor([[0, 0, 64, 48]] * n, dtype=torch.float64),
        _uniforms(n),
    )
    reference = mocov2(size, 0.5)
    torch.manual_seed(0)
    per_image = torch.stack([reference(img) for _ in range(n)])
    ours, theirs = _statistics(batched), _statistics(per_image)
    for name in ("brightness", "colourfulness", "sharpness"):
        assert ks_2samp(ours[name], theirs[name]).pvalue > 0.001, name
    assert abs(ours["gray"].mean() - 0.2) < 0.03 and abs(theirs["gray"].mean() - 0.2) < 0.03
    assert abs(ours["flipped"].mean() - theirs["flipped"].mean()) < 0.05
    assert 0.4 < ours["flipped"].mean() < 0.6


def test_a_samples_views_do_not_depend_on_its_batch(tmp_path):
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.png"))
        write_png(torch.roll(_probe_image(), 5 * i, dims=-1), paths[-1])
    items = [Item(p, box_a=(3.2, 4.0, 30.5, 20.0) if i % 2 else None) for i, p in enumerate(paths)]
    aug = ba.BatchMoCoV2(24, 0.5)

    def views(dataset, keys):
        b = collate_views([dataset[k] for k in keys], aug.crop_boxes)
        return [
            aug(b["images"], b["sources"][v], b["regions"][v], b["uniforms"][v]) for v in range(2)
        ]

    resident, streamed = DecodedViews(items, seed=3), DecodedViews(items, seed=3, resident=False)
    whole = views(resident, [(i, 1) for i in range(6)])
    for i in range(6):  # alone, streamed from disk: the same two views
        alone = views(streamed, [(i, 1)])
        assert all(torch.allclose(whole[v][i], alone[v][0], atol=1e-6) for v in range(2))
    assert not torch.allclose(whole[0], whole[1])  # the two views differ
    assert not torch.allclose(
        whole[0], views(resident, [(i, 2) for i in range(6)])[0]
    )  # another pass, other views


# --- the supervised baseline: crop and flip only ----------------------------------------------------


def test_supervised_views_are_crops_and_flips_of_the_input():
    """With the same uniforms, a supervised view is exactly the MoCo view's crop, resized and flipped
    where the flip was drawn: torchvision's resized crop of the input, no colour change."""
    n, size = 40, 32
    img, u = _probe_image(), _uniforms(n)
    regions = torch.tensor([[0, 0, 64, 48]] * n, dtype=torch.float64)
    supervised = ba.for_method("supervised", size, 0.5)
    out = supervised(img[None], torch.zeros(n, dtype=torch.long), regions, u) * STD + MEAN
    boxes = (
        ba.BatchMoCoV2(size, 0.5).crop_boxes(regions, u).long()
    )  # MoCo's crops, drawn from the same uniforms
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        expected = (
            TF.resized_crop(img, y0, x0, y1 - y0, x1 - x0, [size, size], antialias=True).float()
            / 255
        )
        if u[i, ba.FLIP] < 0.5:
            expected = expected.flip(-1)
        assert (out[i] - expected).abs().mean() < 0.01, i


@pytest.mark.parametrize("batched", [True, False])
def test_supervised_keeps_colours_that_moco_changes(batched):
    """A one-colour image: every crop and flip of it is that colour, so any change is the colour
    operations'. Supervised views (batched and torchvision's per-image crop_flip) keep it exactly;
    most MoCo views (jitter p 0.8, grayscale p 0.2) do not."""
    n, size = 200, 24
    colour = torch.tensor([200, 60, 30], dtype=torch.uint8)
    img = colour[:, None, None].expand(3, 40, 52).contiguous()
    target = colour.float()[:, None, None] / 255

    def views(method: str) -> torch.Tensor:
        if batched:
            aug = ba.for_method(method, size, 0.2)
            out = aug(
                img[None],
                torch.zeros(n, dtype=torch.long),
                torch.tensor([[0, 0, 52, 40]] * n, dtype=torch.float64),
                _uniforms(n, seed=4),
            )
        else:
            aug = crop_flip(size, 0.2) if method == "supervised" else mocov2(size, 0.2)
            torch.manual_seed(4)
            out = torch.stack([aug(img) for _ in range(n)])
        return out * STD + MEAN

    supervised = (views("supervised") - target).abs().amax((1, 2, 3))
    moco = (views("moco") - target).abs().amax((1, 2, 3))
    assert supervised.max() < 1e-5
    assert (moco > 0.02).float().mean() > 0.7
