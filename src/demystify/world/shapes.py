"""Procedural 3D objects: categories as parametric compositions of primitives.

A category is a function that draws an instance's proportions from a random generator and
returns its parts as analytic primitives (ellipsoid, box, capped cylinder) in object space.
Instances of one category share a structure (a mug is always a body plus a handle) and differ
in proportions, colours and surface texture, so instance-level and category-level similarity
differ, as the paper's instance-invariance evaluation needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ELLIPSOID, BOX, CYLINDER = 0, 1, 2
PRIMITIVE_TYPES = (ELLIPSOID, BOX, CYLINDER)
TEXTURES = ("plain", "stripes", "checker", "dots", "waves")
MAX_PARTS = 4  # colour slots per instance


@dataclass(frozen=True)
class Primitive:
    kind: int  # ELLIPSOID | BOX | CYLINDER (cylinder axis: local y)
    center: tuple[float, float, float]
    half: tuple[float, float, float]  # half-extents (radii for ellipsoid / cylinder x,z)
    euler: tuple[float, float, float] = (0.0, 0.0, 0.0)  # radians, x-y-z
    part: int = 0  # index into the instance's part colours


@dataclass(frozen=True)
class Instance:
    category: int  # -1 for occluders
    name: str
    primitives: tuple[Primitive, ...]
    part_colors: np.ndarray  # (MAX_PARTS, 3) linear RGB in [0, 1]
    texture: int  # index into TEXTURES
    texture_freq: float
    texture_contrast: float
    texture_color: np.ndarray  # (3,)


def rotation(euler: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx for x-y-z euler angles (radians)."""
    ax, ay, az = euler
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# --- categories -------------------------------------------------------------------------------
# Each builder returns primitives roughly centred on the origin; `make_instance` rescales the
# whole object to unit bounding radius, so proportions, not absolute size, tell instances apart.


def _mug(r: np.random.Generator) -> list[Primitive]:
    rad, hh = r.uniform(0.45, 0.7), r.uniform(0.5, 0.9)
    handle = r.uniform(0.25, 0.45)
    return [
        Primitive(CYLINDER, (0, 0, 0), (rad, hh, rad), part=0),
        Primitive(BOX, (rad + handle * 0.45, 0, 0), (handle * 0.5, hh * 0.55, 0.07), part=1),
        Primitive(CYLINDER, (0, -hh, 0), (rad * 1.05, 0.06, rad * 1.05), part=2),
    ]


def _table(r: np.random.Generator) -> list[Primitive]:
    w, d, h = r.uniform(0.8, 1.3), r.uniform(0.5, 1.0), r.uniform(0.5, 0.9)
    leg = r.uniform(0.05, 0.1)
    top = r.uniform(0.04, 0.1)
    prims = [Primitive(BOX, (0, h, 0), (w, top, d), part=0)]
    for sx in (-1, 1):
        for sz in (-1, 1):
            prims.append(
                Primitive(
                    CYLINDER, (sx * (w - leg * 2), 0, sz * (d - leg * 2)), (leg, h, leg), part=1
                )
            )
    return prims


def _chair(r: np.random.Generator) -> list[Primitive]:
    w, h, back = r.uniform(0.45, 0.7), r.uniform(0.4, 0.6), r.uniform(0.5, 0.9)
    leg = r.uniform(0.04, 0.07)
    prims = [
        Primitive(BOX, (0, 0, 0), (w, 0.07, w), part=0),
        Primitive(
            BOX, (0, back, -w + 0.05), (w, back, 0.06), euler=(r.uniform(-0.2, 0.05), 0, 0), part=1
        ),
    ]
    for sx in (-1, 1):
        for sz in (-1, 1):
            prims.append(
                Primitive(BOX, (sx * (w - leg), -h, sz * (w - leg)), (leg, h, leg), part=2)
            )
    return prims


def _car(r: np.random.Generator) -> list[Primitive]:
    length, height, width = r.uniform(1.0, 1.4), r.uniform(0.2, 0.35), r.uniform(0.45, 0.6)
    cab = r.uniform(0.35, 0.7)
    wheel = r.uniform(0.17, 0.26)
    prims = [
        Primitive(BOX, (0, 0, 0), (length, height, width), part=0),
        Primitive(
            BOX,
            (r.uniform(-0.3, 0.1), height + height * 0.8, 0),
            (length * cab, height * 0.8, width * 0.9),
            part=1,
        ),
    ]
    for sx in (-1, 1):
        for sz in (-1, 1):
            prims.append(
                Primitive(
                    CYLINDER,
                    (sx * length * 0.65, -height, sz * width),
                    (wheel, 0.08, wheel),
                    euler=(np.pi / 2, 0, 0),
                    part=2,
                )
            )
    return prims


def _bottle(r: np.random.Generator) -> list[Primitive]:
    rad, body = r.uniform(0.3, 0.5), r.uniform(0.6, 1.0)
    neck_r, neck = rad * r.uniform(0.3, 0.5), r.uniform(0.25, 0.5)
    return [
        Primitive(CYLINDER, (0, -0.3, 0), (rad, body, rad), part=0),
        Primitive(ELLIPSOID, (0, body - 0.3, 0), (rad, rad * 0.6, rad), part=0),
        Primitive(CYLINDER, (0, body - 0.3 + neck, 0), (neck_r, neck, neck_r), part=1),
        Primitive(
            CYLINDER, (0, body - 0.3 + 2 * neck, 0), (neck_r * 1.2, 0.07, neck_r * 1.2), part=2
        ),
    ]


def _snowman(r: np.random.Generator) -> list[Primitive]:
    a, b, c = r.uniform(0.55, 0.75), r.uniform(0.4, 0.55), r.uniform(0.25, 0.4)
    return [
        Primitive(ELLIPSOID, (0, -a, 0), (a, a, a), part=0),
        Primitive(ELLIPSOID, (0, b * 0.9, 0), (b, b, b), part=0),
        Primitive(ELLIPSOID, (0, b * 1.8 + c, 0), (c, c, c), part=1),
        Primitive(
            CYLINDER,
            (0, b * 1.8 + c, c),
            (0.05, r.uniform(0.12, 0.25), 0.05),
            euler=(np.pi / 2, 0, 0),
            part=2,
        ),
    ]


def _lamp(r: np.random.Generator) -> list[Primitive]:
    base, pole = r.uniform(0.3, 0.5), r.uniform(0.6, 1.0)
    shade_r, shade_h = r.uniform(0.35, 0.6), r.uniform(0.2, 0.35)
    return [
        Primitive(CYLINDER, (0, -pole, 0), (base, 0.07, base), part=0),
        Primitive(CYLINDER, (0, 0, 0), (0.05, pole, 0.05), part=1),
        Primitive(CYLINDER, (0, pole + shade_h * 0.5, 0), (shade_r, shade_h, shade_r), part=2),
    ]


def _airplane(r: np.random.Generator) -> list[Primitive]:
    length, rad = r.uniform(1.0, 1.3), r.uniform(0.14, 0.22)
    span, chord = r.uniform(0.8, 1.2), r.uniform(0.15, 0.3)
    return [
        Primitive(ELLIPSOID, (0, 0, 0), (length, rad, rad), part=0),
        Primitive(BOX, (r.uniform(-0.1, 0.2), 0, 0), (chord, 0.03, span), part=1),
        Primitive(BOX, (-length * 0.85, rad * 1.6, 0), (chord * 0.5, rad * 1.5, 0.03), part=2),
        Primitive(BOX, (-length * 0.85, 0, 0), (chord * 0.45, 0.03, span * 0.35), part=1),
    ]


def _mushroom(r: np.random.Generator) -> list[Primitive]:
    stem_r, stem_h = r.uniform(0.12, 0.3), r.uniform(0.4, 0.7)
    cap_r, cap_h = r.uniform(0.5, 0.9), r.uniform(0.2, 0.45)
    return [
        Primitive(CYLINDER, (0, -0.2, 0), (stem_r, stem_h, stem_r), part=0),
        Primitive(ELLIPSOID, (0, stem_h - 0.2, 0), (cap_r, cap_h, cap_r), part=1),
    ]


def _dumbbell(r: np.random.Generator) -> list[Primitive]:
    bar, bar_r = r.uniform(0.6, 0.9), r.uniform(0.06, 0.12)
    weight = r.uniform(0.25, 0.45)
    kind = ELLIPSOID if r.uniform() < 0.5 else BOX
    return [
        Primitive(CYLINDER, (0, 0, 0), (bar_r, bar, bar_r), euler=(0, 0, np.pi / 2), part=0),
        Primitive(kind, (-bar, 0, 0), (weight * 0.7, weight, weight), part=1),
        Primitive(kind, (bar, 0, 0), (weight * 0.7, weight, weight), part=1),
    ]


CATEGORIES: tuple[tuple[str, Callable[[np.random.Generator], list[Primitive]]], ...] = (
    ("mug", _mug),
    ("table", _table),
    ("chair", _chair),
    ("car", _car),
    ("bottle", _bottle),
    ("snowman", _snowman),
    ("lamp", _lamp),
    ("airplane", _airplane),
    ("mushroom", _mushroom),
    ("dumbbell", _dumbbell),
)
CATEGORY_NAMES = tuple(name for name, _ in CATEGORIES)


def _random_color(r: np.random.Generator) -> np.ndarray:
    import colorsys

    h, s, v = r.uniform(), r.uniform(0.25, 0.95), r.uniform(0.35, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _normalised(prims: list[Primitive]) -> tuple[Primitive, ...]:
    """Centre the parts and scale them to unit bounding radius."""
    centers = np.array([p.center for p in prims])
    radii = np.array([max(p.half) for p in prims])
    lo, hi = (centers - radii[:, None]).min(0), (centers + radii[:, None]).max(0)
    mid = (lo + hi) / 2
    extent = np.linalg.norm(centers - mid, axis=1) + radii
    k = 1.0 / extent.max()
    return tuple(
        Primitive(
            p.kind,
            tuple((np.array(p.center) - mid) * k),
            tuple(np.array(p.half) * k),
            p.euler,
            p.part,
        )
        for p in prims
    )


def _appearance(r: np.random.Generator) -> dict:
    return {
        "part_colors": np.stack([_random_color(r) for _ in range(MAX_PARTS)]),
        "texture": int(r.integers(len(TEXTURES))),
        "texture_freq": float(r.uniform(2.0, 6.0)),
        "texture_contrast": float(r.uniform(0.3, 0.8)),
        "texture_color": _random_color(r),
    }


def make_instance(category: int, index: int, seed: int) -> Instance:
    """Instance `index` of category `category`, fully determined by (seed, category, index)."""
    r = np.random.default_rng([seed, 1, category, index])
    name, build = CATEGORIES[category]
    prims = _normalised(build(r))
    return Instance(category, f"{name}_{index:03d}", prims, **_appearance(r))


def make_occluder(index: int, seed: int) -> Instance:
    """A flat panel or bar that passes in front of objects; not a category."""
    r = np.random.default_rng([seed, 2, index])
    if index % 2 == 0:  # a panel
        prims = [Primitive(BOX, (0, 0, 0), (r.uniform(0.3, 0.6), r.uniform(0.6, 1.0), 0.04))]
    else:  # a bar
        prims = [
            Primitive(CYLINDER, (0, 0, 0), (r.uniform(0.12, 0.25), 1.0, r.uniform(0.12, 0.25)))
        ]
    return Instance(-1, f"occluder_{index:03d}", tuple(prims), **_appearance(r))


def make_catalog(
    categories: int, instances_per_category: int, occluders: int, seed: int
) -> list[Instance]:
    """All instances, category-major, then the occluders."""
    items = [
        make_instance(c, i, seed) for c in range(categories) for i in range(instances_per_category)
    ]
    items += [make_occluder(i, seed) for i in range(occluders)]
    return items
