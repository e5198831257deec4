"""Scene descriptions: where objects, lights and cameras are, for every kind of data product.

Each function draws from its own generator, seeded by (world seed, product, index), so an
item's content does not depend on how many others are made or in what batches they render.
Screen coordinates are normalised: v in [-1, 1] top to bottom, u in [-aspect, aspect].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demystify.world.render import FOCAL, SceneBatch

BASE_DEPTH = 6.0
# Product codes: the second element of every generator seed.
OBJECT_CENTRIC, SCENE, VIDEO, OCCLUSION, INSTANCE, CLASSIFICATION, SEGMENTATION, ALOI = range(
    10, 18
)


def rng_for(seed: int, product: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, product, index])


def pose(azimuth: float, elevation: float, roll: float = 0.0) -> np.ndarray:
    """Object rotation seen from a camera at `elevation` above and `azimuth` around it (radians)."""
    ca, sa, ce, se, cr, sr = (
        np.cos(azimuth),
        np.sin(azimuth),
        np.cos(elevation),
        np.sin(elevation),
        np.cos(roll),
        np.sin(roll),
    )
    ry = np.array([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])
    rx = np.array([[1, 0, 0], [0, ce, -se], [0, se, ce]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return (rz @ rx @ ry).astype(np.float32)


def place(u: float, v: float, radius: float, depth: float = BASE_DEPTH) -> tuple[np.ndarray, float]:
    """World position and scale for an object centred at screen (u, v) with projected `radius`."""
    pos = np.array([u * depth / FOCAL, -v * depth / FOCAL, -depth], np.float32)
    return pos, radius * depth / FOCAL


def kelvin_to_rgb(kelvin: float) -> np.ndarray:
    """Colour of black-body light (Tanner Helland's fit), scaled to unit luminance."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = (
        99.4708025861 * np.log(t) - 161.1195681661
        if t <= 66
        else 288.1221695283 * (t - 60) ** -0.0755148492
    )
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
    rgb = np.clip(np.array([r, g, b]), 0, 255) / 255.0
    return (rgb / (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2])).astype(np.float32)


def light_direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector towards a light at `elevation` above the view axis, `azimuth` around it."""
    return np.array(
        [
            np.sin(azimuth) * np.cos(elevation),
            np.sin(elevation),
            np.cos(azimuth) * np.cos(elevation),
        ],
        np.float32,
    )


def random_background(r: np.random.Generator) -> np.ndarray:
    kind = r.integers(0, 5)
    c1, c2 = r.uniform(0.05, 0.9, 3), r.uniform(0.05, 0.9, 3)
    return np.concatenate(
        [[kind, r.uniform(3, 12), r.uniform(0, np.pi), r.uniform(0, 2 * np.pi)], c1, c2]
    ).astype(np.float32)


BLACK = np.zeros(10, np.float32)


@dataclass
class Item:
    """One image's scene: up to K objects plus light and background."""

    inst: list[int]
    pos: list[np.ndarray]
    rot: list[np.ndarray]
    scale: list[float]
    light_dir: np.ndarray
    light_rgb: np.ndarray
    ambient: float
    background: np.ndarray


def random_light(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    direction = light_direction(r.uniform(-1.2, 1.2), r.uniform(0.2, 1.1))
    return direction, kelvin_to_rgb(r.uniform(4000, 8000)), float(r.uniform(0.25, 0.45))


def stack(items: list[Item], slots: int | None = None) -> SceneBatch:
    """Pack items into a SceneBatch with `slots` object slots (default: the most any item has)."""
    k = slots or max(len(it.inst) for it in items)
    b = len(items)
    batch = SceneBatch(
        inst=np.full((b, k), -1, np.int64),
        pos=np.zeros((b, k, 3), np.float32) + np.array([0, 0, -BASE_DEPTH], np.float32),
        rot=np.tile(np.eye(3, dtype=np.float32), (b, k, 1, 1)),
        scale=np.ones((b, k), np.float32),
        light_dir=np.stack([it.light_dir for it in items]).astype(np.float32),
        light_rgb=np.stack([it.light_rgb for it in items]).astype(np.float32),
        ambient=np.array([it.ambient for it in items], np.float32),
        background=np.stack([it.background for it in items]).astype(np.float32),
    )
    for i, it in enumerate(items):
        n = len(it.inst)
        batch.inst[i, :n] = it.inst
        if n:
            batch.pos[i, :n] = np.stack(it.pos)
            batch.rot[i, :n] = np.stack(it.rot)
            batch.scale[i, :n] = it.scale
    return batch


# --- still images -----------------------------------------------------------------------------


def object_centric(r: np.random.Generator, instance: int) -> Item:
    """ImageNet-like: one large, roughly centred object on a textured background."""
    pos, scale = place(r.uniform(-0.12, 0.12), r.uniform(-0.12, 0.12), r.uniform(0.6, 0.85))
    light, rgb, amb = random_light(r)
    rot = pose(r.uniform(0, 2 * np.pi), r.uniform(-0.2, 0.7), r.uniform(-0.15, 0.15))
    return Item([instance], [pos], [rot], [scale], light, rgb, amb, random_background(r))


def scene(r: np.random.Generator, instances: list[int]) -> Item:
    """COCO-like: several smaller objects spread over the frame, some overlapping."""
    positions, scales, rots = [], [], []
    for _ in instances:
        depth = r.uniform(5.0, 9.0)
        pos, scale = place(
            r.uniform(-0.75, 0.75), r.uniform(-0.75, 0.75), r.uniform(0.16, 0.32), depth
        )
        positions.append(pos)
        scales.append(scale)
        rots.append(pose(r.uniform(0, 2 * np.pi), r.uniform(-0.2, 0.7)))
    light, rgb, amb = random_light(r)
    return Item(list(instances), positions, rots, scales, light, rgb, amb, random_background(r))


def aloi_view(instance: int, azimuth_deg: float) -> Item:
    """ALOI: object on a turntable, black background, fixed light; varies the azimuth."""
    pos, scale = place(0.0, 0.0, 0.75)
    return Item(
        [instance],
        [pos],
        [pose(np.deg2rad(azimuth_deg), np.deg2rad(20))],
        [scale],
        light_direction(0.3, 0.6),
        kelvin_to_rgb(6500),
        0.3,
        BLACK,
    )


def aloi_illumination(instance: int, light: int, camera: int) -> Item:
    """ALOI illumination direction: light l1..l8 around the object, cameras c1..c3."""
    pos, scale = place(0.0, 0.0, 0.75)
    light_az = np.deg2rad(-90 + 180 * (light - 1) / 7)
    cam_az = np.deg2rad((camera - 2) * 15)
    return Item(
        [instance],
        [pos],
        [pose(cam_az, np.deg2rad(20))],
        [scale],
        light_direction(light_az, 0.35),
        kelvin_to_rgb(6500),
        0.15,
        BLACK,
    )


ALOI_COLOR_CODES = (110, 120, 130, 140, 150, 160, 170, 180, 190, 210, 230, 250)


def aloi_color(instance: int, code: int) -> Item:
    """ALOI illumination colour: lamp voltage codes i110..i250 mapped to 2500..7500 K."""
    kelvin = 2500 + 5000 * ALOI_COLOR_CODES.index(code) / (len(ALOI_COLOR_CODES) - 1)
    pos, scale = place(0.0, 0.0, 0.75)
    return Item(
        [instance],
        [pos],
        [pose(0.0, np.deg2rad(20))],
        [scale],
        light_direction(0.3, 0.6),
        kelvin_to_rgb(kelvin),
        0.3,
        BLACK,
    )


def instance_view(
    r: np.random.Generator, instance: int, az_bin: int, el_bin: int
) -> tuple[Item, float, float]:
    """PASCAL3D+-like object view inside azimuth bin (az mod 180)//30 and elevation bin (el mod 90)//30."""
    az = az_bin * 30 + r.uniform(3, 27) + 180 * r.integers(0, 2)
    el = el_bin * 30 + r.uniform(3, 27)
    pos, scale = place(r.uniform(-0.08, 0.08), r.uniform(-0.08, 0.08), r.uniform(0.6, 0.8))
    light, rgb, amb = random_light(r)
    item = Item(
        [instance],
        [pos],
        [pose(np.deg2rad(az), np.deg2rad(el))],
        [scale],
        light,
        rgb,
        amb,
        random_background(r),
    )
    return item, az, el


# --- videos ------------------------------------------------------------------------------------


@dataclass
class Track:
    """Per-frame trajectory of one object over T frames."""

    inst: int
    pos: np.ndarray  # (T, 3)
    rot: np.ndarray  # (T, 3, 3)
    scale: np.ndarray  # (T,)
    azimuth: np.ndarray  # (T,) radians: the pose of `rot`, recorded for the pairs' viewpoint change
    elevation: np.ndarray  # (T,)


def _smooth_path(
    r: np.random.Generator, frames: int, start: np.ndarray, end: np.ndarray, wobble: float
) -> np.ndarray:
    s = np.linspace(0, 1, frames)[:, None]
    phase, freq = r.uniform(0, 2 * np.pi, 2), r.uniform(0.5, 1.5, 2)
    wob = wobble * np.sin(2 * np.pi * freq * s + phase)
    return start + (end - start) * s + wob


def moving_object(
    r: np.random.Generator,
    inst: int,
    frames: int,
    aspect: float,
    radius: tuple[float, float],
    depth: float,
    spin_deg: float,
) -> Track:
    lim = np.array([aspect - 0.45, 0.55])
    uv = _smooth_path(r, frames, r.uniform(-lim, lim), r.uniform(-lim, lim) * 0.6, 0.08)
    rad = np.linspace(*r.uniform(*radius, 2), frames)
    az0 = r.uniform(0, 2 * np.pi)
    az = az0 + np.deg2rad(spin_deg) * np.linspace(0, 1, frames) * r.choice([-1, 1])
    el = np.deg2rad(r.uniform(-10, 40)) + np.deg2rad(12) * np.sin(
        np.linspace(0, np.pi, frames) + r.uniform(0, 3)
    )
    pos = np.stack([place(u, v, rr, depth)[0] for (u, v), rr in zip(uv, rad, strict=True)])
    scale = np.array([place(0, 0, rr, depth)[1] for rr in rad], np.float32)
    rot = np.stack([pose(a, e) for a, e in zip(az, el, strict=True)])
    return Track(inst, pos, rot, scale, az, el)


@dataclass(frozen=True)
class Sweep:
    """How an occluder passes: at `depth`, at height `v` (the frame's units), between frame
    `start` and `start + duration`; `rad`: its radius (None: drawn at random)."""

    depth: float
    start: int
    duration: int
    v: float = 0.0
    rad: float | None = None


def passing_occluder(
    r: np.random.Generator, inst: int, frames: int, aspect: float, sweep: Sweep
) -> Track:
    """An occluder sweeping horizontally across the frame between `sweep.start` and
    `sweep.start + sweep.duration`."""
    t = np.clip((np.arange(frames) - sweep.start) / max(sweep.duration, 1), 0, 1)
    direction = r.choice([-1, 1])
    rad = r.uniform(0.35, 0.6) if sweep.rad is None else sweep.rad
    reach = aspect + rad  # far enough to start and end fully outside the frame
    u = direction * (-reach + 2 * reach * t)
    pos = np.stack([place(uu, sweep.v, rad, sweep.depth)[0] for uu in u])
    scale = np.full(frames, place(0, 0, rad, sweep.depth)[1], np.float32)
    az = r.uniform(-0.3, 0.3)
    rot = np.repeat(pose(az, 0.0, r.uniform(-0.3, 0.3))[None], frames, 0)
    return Track(inst, pos, rot, scale, np.full(frames, az), np.zeros(frames))


def video_frames(
    tracks: list[Track], frames: int, r: np.random.Generator, drift: bool = True
) -> SceneBatch:
    """All frames of a clip as one SceneBatch; slot order = track order (slot 0: the target)."""
    light_az = r.uniform(-1.0, 1.0) + (np.linspace(0, r.uniform(-1.0, 1.0), frames) if drift else 0)
    light_el = r.uniform(0.3, 0.9)
    kelvin = np.linspace(*r.uniform(3500, 8500, 2), frames) if drift else np.full(frames, 6500.0)
    # The camera is static, so the background is too (a sliding pattern behind still-standing
    # objects would be neither a static nor a moving camera).
    backgrounds = np.repeat(random_background(r)[None], frames, 0)
    return SceneBatch(
        inst=np.array([[tr.inst for tr in tracks]] * frames, np.int64),
        pos=np.stack([tr.pos for tr in tracks], 1).astype(np.float32),
        rot=np.stack([tr.rot for tr in tracks], 1).astype(np.float32),
        scale=np.stack([tr.scale for tr in tracks], 1).astype(np.float32),
        light_dir=np.stack(
            [light_direction(a, light_el) for a in np.broadcast_to(light_az, frames)]
        ),
        light_rgb=np.stack([kelvin_to_rgb(kv) for kv in kelvin]),
        ambient=np.full(frames, r.uniform(0.25, 0.4), np.float32),
        background=backgrounds.astype(np.float32),
    )


def cover_label(visible_fraction: float) -> int:
    """GOT-10k's cover.label: 0 fully occluded ... 8 fully visible, in 15% steps."""
    if visible_fraction <= 0:
        return 0
    if visible_fraction >= 0.9999:
        return 8
    # round first: 0.15 * 100 / 15 is 1.0000000000000002 in floating point
    return min(7, int(np.ceil(round(visible_fraction * 100 / 15, 9))))
