"""The renderer: deterministic, and its ground truth agrees with its pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demystify.world import scenes as sc
from demystify.world.render import Renderer, mask_boxes
from demystify.world.shapes import CATEGORIES, make_catalog, make_instance

SEED = 3


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(len(CATEGORIES), 3, 2, SEED)


@pytest.fixture(scope="module")
def renderer(catalog):
    return Renderer(catalog, 48, 64)


def _scenes(n: int, objects: int, n_inst: int) -> list[sc.Item]:
    out = []
    for i in range(n):
        r = sc.rng_for(SEED, sc.SCENE, i)
        out.append(sc.scene(r, [int(x) for x in r.choice(n_inst, size=objects, replace=False)]))
    return out


def test_at_least_eight_categories_of_distinct_instances():
    assert len(CATEGORIES) >= 8
    for c in range(len(CATEGORIES)):
        a, b = make_instance(c, 0, SEED), make_instance(c, 1, SEED)
        assert len(a.primitives) == len(b.primitives)  # one structure per category
        assert a.primitives != b.primitives  # different proportions
        assert not np.allclose(a.part_colors, b.part_colors)


def test_instances_are_deterministic():
    a, b = make_instance(4, 7, SEED), make_instance(4, 7, SEED)
    assert a.primitives == b.primitives and np.array_equal(a.part_colors, b.part_colors)
    assert make_instance(4, 7, SEED + 1).primitives != a.primitives


def test_rendering_is_deterministic(catalog, renderer):
    batch = sc.stack(_scenes(6, 3, 30))
    a, b = renderer(batch), Renderer(catalog, 48, 64)(batch)
    assert torch.equal(a.rgb, b.rgb)
    assert torch.equal(a.slot, b.slot)
    assert a.rgb.shape == (6, 48, 64, 3) and a.rgb.dtype == torch.uint8


def test_boxes_match_masks(renderer):
    batch = sc.stack(_scenes(8, 4, 30))
    out = renderer(batch)
    for k in range(4):
        mask = out.slot == k
        assert torch.equal(out.visible_area[:, k], mask.flatten(1).sum(1))
        for i in range(8):
            ys, xs = torch.nonzero(mask[i], as_tuple=True)
            if len(ys) == 0:
                assert out.boxes[i, k].tolist() == [0, 0, 0, 0]
                continue
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
            assert out.boxes[i, k].tolist() == [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
    # visible pixels are a subset of the object's own (amodal) silhouette
    vis = torch.stack([out.slot == k for k in range(4)], 1)
    assert not (vis & ~out.amodal).any()
    assert (out.visible_area <= out.amodal_area).all()
    assert torch.equal(mask_boxes(vis), out.boxes)


def test_nearer_object_hides_farther(catalog, renderer):
    pos_far, s_far = sc.place(0, 0, 0.5, 8.0)
    pos_near, s_near = sc.place(0, 0, 0.5, 4.0)
    light = sc.light_direction(0, 0.5)
    item = sc.Item(
        [0, 1],
        [pos_far, pos_near],
        [sc.pose(0, 0)] * 2,
        [s_far, s_near],
        light,
        sc.kelvin_to_rgb(6500),
        0.3,
        sc.BLACK,
    )
    out = renderer(sc.stack([item]))
    alone = renderer(
        sc.stack(
            [
                sc.Item(
                    [0],
                    [pos_far],
                    [sc.pose(0, 0)],
                    [s_far],
                    light,
                    sc.kelvin_to_rgb(6500),
                    0.3,
                    sc.BLACK,
                )
            ]
        )
    )
    assert out.visible_area[0, 0] < alone.visible_area[0, 0]  # partly hidden
    assert out.amodal_area[0, 0] == alone.amodal_area[0, 0]  # same silhouette either way
    assert torch.equal(out.amodal[0, 0], alone.amodal[0, 0])


def test_light_colour_changes_pixels_not_masks(renderer):
    pos, s = sc.place(0, 0, 0.7)
    items = [
        sc.Item(
            [3],
            [pos],
            [sc.pose(0.5, 0.3)],
            [s],
            sc.light_direction(0.3, 0.6),
            sc.kelvin_to_rgb(k),
            0.3,
            sc.BLACK,
        )
        for k in (3000, 9000)
    ]
    out = renderer(sc.stack(items))
    assert torch.equal(out.slot[0], out.slot[1])
    warm, cool = (
        out.rgb[0][out.slot[0] == 0].float().mean(0),
        out.rgb[1][out.slot[1] == 0].float().mean(0),
    )
    assert warm[0] / warm[2] > cool[0] / cool[2]  # warmer light: redder object


@pytest.mark.parametrize(
    ("fraction", "label"), [(0.0, 0), (0.1, 1), (0.15, 1), (0.16, 2), (0.5, 4), (0.95, 7), (1.0, 8)]
)
def test_cover_label_levels(fraction, label):
    assert sc.cover_label(fraction) == label
