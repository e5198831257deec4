"""The `synthesize` stage: render the whole synthetic world into `data/world/`.

Layout (each part in the public data set's own layout, so the real readers run on it):

    catalog.csv                                  every instance: index, name, category
    videos/list.txt, videos/<seq>.mp4            training videos (H.264)
    videos/<seq>/{groundtruth.txt, cover.label, absence.label, meta_info.ini}   GOT-10k
    videos/<seq>/objects.csv                     every object's box per frame (an extension)
    corpora/object_centric/<category>/<n>.png    ImageNet-like ImageFolder (+ annotations.csv)
    corpora/scenes/{images,masks}/<n>.png        COCO-like scenes (+ annotations.csv, one row per object)
    corpora/scene_crops/<category>/<n>_<k>.png   one object per scene (its largest visible one) cut out by its box
    eval/aloi/aloi_red2_{view,ill,col}/png2/<obj>/<obj>_{r<deg>,l<l>c<c>,i<code>}.png
    eval/got10k/train/list.txt, eval/got10k/train/<seq>/{00000001.jpg, ...}    occlusion
    eval/pascal3d/ (Images, Annotations .mat, Image_sets) + labels.csv   PASCAL3D+ layout, azimuth/elevation bins
    eval/classification/{train,val,test}/<category>/<n>.png + annotations.csv (path, split, category, instance)
    eval/segmentation/{train,test}/{images,masks}/<n>.png + classes.txt
    world.json                                   counts and sizes
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from demystify.core.config import WorldParams
from demystify.core.io import atomic_dir
from demystify.world import scenes as sc
from demystify.world.render import Rendered, Renderer, SceneBatch, keep_freed_memory, mask_boxes
from demystify.world.shapes import CATEGORY_NAMES, TEXTURES, make_catalog
from demystify.world.writers import (
    encode_mp4,
    got_meta,
    write_got_annotations,
    write_image,
    write_list,
    write_mask,
    write_pascal3d_annotation,
)

OCCLUDERS = 8
# Each category's instances split into classification train / val / test blocks: the last
# CLASSIFICATION_TEST_SHARE are test, the CLASSIFICATION_VAL_SHARE before them val
# (config.instance_split); pretraining sources use train and val instances only.


class World:
    """The catalog plus one renderer per resolution; knows which catalog index is what.

    Pretraining sources (object-centric corpus, scenes and their crops, videos) draw only from
    `pretrain_local`, the train and val instances of each category; the test instances are held
    out. `holdout=False` lets them draw from every instance, test ones included: the leaking world
    of before issue 21, for tests that the leakage check catches it (not a user param)."""

    def __init__(self, params: WorldParams, holdout: bool = True):
        self.p = params
        self.catalog = make_catalog(
            params.categories, params.instances_per_category, OCCLUDERS, params.seed
        )
        self._renderers: dict[tuple[int, int], Renderer] = {}
        self.split = (
            params.instance_split()
        )  # classification train / val / test, by index within a category
        self.pretrain_local = range(
            self.split["test"].start if holdout else params.instances_per_category
        )
        self.pretrain_pool = [
            self.instance(c, j) for c in range(params.categories) for j in self.pretrain_local
        ]
        self.all_instances = list(range(params.categories * params.instances_per_category))

    def renderer(self, height: int, width: int) -> Renderer:
        if (height, width) not in self._renderers:
            self._renderers[(height, width)] = Renderer(self.catalog, height, width)
        return self._renderers[(height, width)]

    def instance(self, category: int, index: int) -> int:
        return category * self.p.instances_per_category + index

    def occluder(self, index: int) -> int:
        return self.p.categories * self.p.instances_per_category + index % OCCLUDERS

    def category_of(self, inst: np.ndarray) -> np.ndarray:
        """Catalog index -> category, -1 for occluders and empty slots."""
        table = np.array([i.category for i in self.catalog] + [-1])
        return table[np.where(inst < 0, len(self.catalog), inst)]

    def render(
        self,
        items: list[sc.Item],
        size: int | tuple[int, int],
        desc: str = "",
        progress: bool = False,
    ) -> Iterator[tuple[int, Rendered, SceneBatch]]:
        """Render items in batches; yields (index of the batch's first item, result, batch)."""
        h, w = (size, size) if isinstance(size, int) else size
        renderer = self.renderer(h, w)
        k = max(len(it.inst) for it in items)
        starts = range(0, len(items), self.p.render_batch)
        for start in tqdm(starts, desc=desc, disable=None if progress else True):
            batch = sc.stack(items[start : start + self.p.render_batch], k)
            yield start, renderer(batch), batch

    def category_mask(self, rendered: Rendered, batch: SceneBatch, i: int) -> np.ndarray:
        """VOC-style mask of item i: 0 background (and occluders), category + 1 elsewhere."""
        slot = rendered.slot[i].numpy()
        cats = self.category_of(batch.inst[i])
        lut = np.concatenate([cats + 1, [0]])  # slot -1 -> last entry -> background
        return np.where(lut[slot] < 0, 0, lut[slot]).astype(np.uint8)


# --- products ----------------------------------------------------------------------------------


def write_catalog(world: World, out: Path) -> None:
    rows = [
        {
            "index": i,
            "name": inst.name,
            "category": inst.category,
            "category_name": CATEGORY_NAMES[inst.category] if inst.category >= 0 else "occluder",
            "texture": TEXTURES[inst.texture],
        }
        for i, inst in enumerate(world.catalog)
    ]
    pd.DataFrame(rows).to_csv(out / "catalog.csv", index=False)
    (out / "categories.txt").write_text(
        "".join(f"{n}\n" for n in CATEGORY_NAMES[: world.p.categories])
    )


def _video_tracks(
    world: World, r: np.random.Generator, frames: int, aspect: float
) -> list[sc.Track]:
    v = world.p.videos
    pool = (
        world.pretrain_pool
    )  # targets and distractors alike: no test instance in a training video
    target = int(r.integers(len(pool)))
    tracks = [
        sc.moving_object(
            r, pool[target], frames, aspect, (0.3, 0.5), sc.BASE_DEPTH, r.uniform(*v.spin_deg)
        )
    ]
    for _ in range(int(r.integers(v.distractors[0], v.distractors[1] + 1))):
        other = int(r.integers(len(pool) - 1))
        other += other >= target
        tracks.append(
            sc.moving_object(
                r, pool[other], frames, aspect, (0.15, 0.3), r.uniform(7.0, 10.0), r.uniform(0, 120)
            )
        )
    for j in range(int(r.integers(v.occluders[0], v.occluders[1] + 1))):
        start, duration = (
            int(r.integers(0, max(1, frames // 2))),
            int(r.integers(frames // 4, frames // 2 + 1)),
        )
        inst = world.occluder(j + int(r.integers(OCCLUDERS)))
        # the draws in this order: depth, then height (the world's bytes depend on it)
        sweep = sc.Sweep(r.uniform(3.5, 4.5), start, duration, v=r.uniform(-0.4, 0.4))
        tracks.append(sc.passing_occluder(r, inst, frames, aspect, sweep))
    return tracks


def _ground_truth(rendered: Rendered) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame and slot: amodal boxes (T, K, 4), visible fraction (T, K), absence (T, K)."""
    amodal_boxes = mask_boxes(rendered.amodal).numpy()
    amodal_area = rendered.amodal_area.numpy().astype(np.float64)
    visible = rendered.visible_area.numpy() / np.maximum(amodal_area, 1)
    absent = rendered.visible_area.numpy() == 0
    return amodal_boxes, visible, absent


def write_videos(world: World, out: Path, progress: bool) -> int:
    v = world.p.videos
    root = out / "videos"
    names = []
    for i in tqdm(range(v.count), desc="videos", disable=None if progress else True):
        r = sc.rng_for(world.p.seed, sc.VIDEO, i)
        tracks = _video_tracks(world, r, v.frames, v.width / v.height)
        batch = sc.video_frames(tracks, v.frames, r)
        rendered = world.renderer(v.height, v.width).render_chunked(batch, world.p.render_batch)
        name = f"GOT-10k_Train_{i + 1:06d}"
        encode_mp4(root / f"{name}.mp4", rendered.rgb.numpy(), v.fps)
        boxes, visible, absent = _ground_truth(rendered)
        cats = world.category_of(batch.inst[0])
        target_class = CATEGORY_NAMES[cats[0]]
        write_got_annotations(
            root / name,
            boxes[:, 0],
            [sc.cover_label(f) for f in visible[:, 0]],
            absent[:, 0],
            got_meta(target_class, v.fps, v.width, v.height, v.frames, "translation+rotation"),
        )
        rows = [
            {
                "frame": t,
                "track": k,
                "category": int(cats[k]),
                "instance": int(batch.inst[0, k]),
                "x": boxes[t, k, 0],
                "y": boxes[t, k, 1],
                "w": boxes[t, k, 2],
                "h": boxes[t, k, 3],
                "visible_fraction": round(float(visible[t, k]), 4),
                "azimuth_deg": round(float(np.rad2deg(tracks[k].azimuth[t])), 3),
                "elevation_deg": round(float(np.rad2deg(tracks[k].elevation[t])), 3),
            }
            for t in range(v.frames)
            for k in range(len(tracks))
        ]
        pd.DataFrame(rows).to_csv(root / name / "objects.csv", index=False)
        names.append(name)
    write_list(root / "list.txt", names)
    return len(names)


def write_object_centric(world: World, out: Path, progress: bool) -> int:
    p = world.p
    per = p.corpora.object_centric_per_category
    items, labels = [], []
    for c in range(p.categories):
        for j in range(per):
            r = sc.rng_for(p.seed, sc.OBJECT_CENTRIC, c * per + j)
            inst = world.instance(
                c, world.pretrain_local[int(r.integers(len(world.pretrain_local)))]
            )
            items.append(sc.object_centric(r, inst))
            labels.append((c, j, inst))
    root = out / "corpora" / "object_centric"
    rows = []
    for start, rendered, _ in world.render(items, p.image_size, "object-centric", progress):
        for i in range(rendered.rgb.shape[0]):
            c, j, inst = labels[start + i]
            rel = f"{CATEGORY_NAMES[c]}/{j:05d}.png"
            write_image(root / rel, rendered.rgb[i].numpy())
            x, y, w, h = rendered.boxes[i, 0].tolist()
            rows.append(
                {
                    "path": rel,
                    "category": CATEGORY_NAMES[c],
                    "instance": inst,
                    "x": x,
                    "y": y,
                    "w": w,
                    "h": h,
                    "area_share": int(rendered.visible_area[i, 0]) / p.image_size**2,
                }
            )
    pd.DataFrame(rows).to_csv(root / "annotations.csv", index=False)
    return len(rows)


def _scene_items(
    world: World,
    product: int,
    count: int,
    objects: tuple[int, int],
    pool: list[int],
    offset: int = 0,
) -> list[sc.Item]:
    """Scenes of `objects` distinct instances drawn from `pool` (catalog indices)."""
    p = world.p
    items = []
    for i in range(count):
        r = sc.rng_for(p.seed, product, offset + i)
        k = int(r.integers(objects[0], objects[1] + 1))
        items.append(
            sc.scene(r, [pool[int(x)] for x in r.choice(len(pool), size=k, replace=False)])
        )
    return items


def _crop(rgb: np.ndarray, box: list[float], margin: float, size: int) -> np.ndarray:
    """The square around a box (its longer side plus `margin` of context), reflected at the image
    border, resized to size x size."""
    import cv2

    x, y, w, h = box
    side = max(w, h) * (1 + margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    padded = cv2.copyMakeBorder(rgb, s, s, s, s, cv2.BORDER_REFLECT)
    crop = padded[y0 + s : y0 + 2 * s, x0 + s : x0 + 2 * s]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def write_scenes_and_crops(world: World, out: Path, progress: bool) -> tuple[int, int]:
    """The scenes, and one crop per scene: its largest visible object (most visible pixels; ties to
    the first), so scenes and scene crops have the same number of images (claim 2's equal data)."""
    p = world.p
    items = _scene_items(
        world, sc.SCENE, p.corpora.scenes, p.corpora.objects_per_scene, world.pretrain_pool
    )
    root, crops_root = out / "corpora" / "scenes", out / "corpora" / "scene_crops"
    rows, crop_rows = [], []
    for start, rendered, batch in world.render(items, p.scene_size, "scenes", progress):
        for i in range(rendered.rgb.shape[0]):
            image = _Image(rendered, batch, i, start + i)
            n, objects = image.n, len(items[image.n].inst)
            write_image(root / "images" / f"{n:05d}.png", rendered.rgb[i].numpy())
            write_mask(root / "masks" / f"{n:05d}.png", world.category_mask(rendered, batch, i))
            rows += _scene_rows(world, image, objects)
            crop_rows.append(_scene_crop(world, image, objects, crops_root))
    pd.DataFrame(rows).to_csv(root / "annotations.csv", index=False)
    pd.DataFrame(crop_rows).to_csv(crops_root / "annotations.csv", index=False)
    return len(items), len(crop_rows)


@dataclass(frozen=True)
class _Image:
    """Image `i` of a rendered batch: number `n` of its set."""

    rendered: Rendered
    batch: SceneBatch
    i: int
    n: int


def _scene_rows(world: World, image: _Image, objects: int) -> list[dict]:
    """The scene's annotation rows: one per object, its visible box and how much of it shows."""
    rendered, batch, i, n = image.rendered, image.batch, image.i, image.n
    cats = world.category_of(batch.inst[i])
    rows = []
    for k in range(objects):
        x, y, w, h = rendered.boxes[i, k].tolist()
        vis = int(rendered.visible_area[i, k])
        frac = vis / max(int(rendered.amodal_area[i, k]), 1)
        rows.append(
            {
                "image": f"images/{n:05d}.png",
                "object": k,
                "category": CATEGORY_NAMES[cats[k]],
                "instance": int(batch.inst[i, k]),
                "x": x,
                "y": y,
                "w": w,
                "h": h,
                "area_share": vis / world.p.scene_size**2,
                "visible_fraction": round(frac, 4),
            }
        )
    return rows


def _scene_crop(world: World, image: _Image, objects: int, crops_root: Path) -> dict:
    """Write the crop of the scene's largest visible object; its annotation row."""
    rendered, batch, i, n = image.rendered, image.batch, image.i, image.n
    p = world.p
    cats = world.category_of(batch.inst[i])
    # some object always shows (each object's centre is in the frame, and the nearest object
    # along that pixel's ray is visible there)
    k = int(np.argmax(rendered.visible_area[i, :objects].numpy()))
    box = rendered.boxes[i, k].tolist()
    if box[2] <= 0 or box[3] <= 0:
        raise RuntimeError(f"scene {n}: no visible object to crop")
    rel = f"{CATEGORY_NAMES[cats[k]]}/{n:05d}_{k}.png"
    rgb = rendered.rgb[i].numpy()
    write_image(crops_root / rel, _crop(rgb, box, p.corpora.crop_margin, p.image_size))
    return {
        "path": rel,
        "category": CATEGORY_NAMES[cats[k]],
        "instance": int(batch.inst[i, k]),
        "source": f"images/{n:05d}.png",
        "object": k,
        "x": box[0],
        "y": box[1],
        "w": box[2],
        "h": box[3],
    }


def _aloi_objects(world: World) -> list[int]:
    per = world.p.evaluation.aloi_instances_per_category
    return [world.instance(c, j) for c in range(world.p.categories) for j in range(per)]


def write_aloi(world: World, out: Path, progress: bool) -> int:
    p = world.p
    root = out / "eval" / "aloi"
    objects = _aloi_objects(world)
    variants: dict[str, list[tuple[str, sc.Item]]] = {"view": [], "ill": [], "col": []}
    for o, inst in enumerate(objects, start=1):
        for deg in range(0, 360, p.evaluation.aloi_view_step_deg):
            variants["view"].append((f"{o}/{o}_r{deg}.png", sc.aloi_view(inst, deg)))
        for light in range(1, 9):
            for cam in range(1, 4):
                variants["ill"].append(
                    (f"{o}/{o}_l{light}c{cam}.png", sc.aloi_illumination(inst, light, cam))
                )
        for code in sc.ALOI_COLOR_CODES:
            variants["col"].append((f"{o}/{o}_i{code}.png", sc.aloi_color(inst, code)))
    count = 0
    for name, entries in variants.items():
        folder = root / f"aloi_red2_{name}" / "png2"
        items = [e[1] for e in entries]
        for start, rendered, _ in world.render(items, p.image_size, f"aloi {name}", progress):
            for i in range(rendered.rgb.shape[0]):
                write_image(folder / entries[start + i][0], rendered.rgb[i].numpy())
                count += 1
    pd.DataFrame(
        {
            "object": range(1, len(objects) + 1),
            "instance": objects,
            "category": [CATEGORY_NAMES[world.catalog[i].category] for i in objects],
        }
    ).to_csv(root / "objects.csv", index=False)
    return count


def write_occlusion(world: World, out: Path, progress: bool) -> int:
    """GOT-10k-style clips (JPEG frames) of an object a large panel sweeps across."""
    p, e = world.p, world.p.evaluation
    root = out / "eval" / "got10k" / "train"
    n_inst = p.categories * p.instances_per_category  # an evaluation-only set: any instance
    names = []
    size = p.image_size * 2
    for i in tqdm(range(e.occlusion_videos), desc="occlusion", disable=None if progress else True):
        r = sc.rng_for(p.seed, sc.OCCLUSION, i)
        frames = e.occlusion_frames
        target = sc.Track(int(r.integers(n_inst)), *_still_track(r, frames))
        # panel radius large enough that its narrowest half-extent covers the object
        sweep = sc.Sweep(depth=3.5, start=0, duration=frames - 1, v=0.0, rad=2.2)
        occ = sc.passing_occluder(r, world.occluder(0), frames, 1.0, sweep)
        batch = sc.video_frames([target, occ], frames, r, drift=False)
        rendered = world.renderer(size, size).render_chunked(batch, p.render_batch)
        boxes, visible, absent = _ground_truth(rendered)
        name = f"GOT-10k_Train_{i + 1:06d}"
        for t in range(frames):
            write_image(root / name / f"{t + 1:08d}.jpg", rendered.rgb[t].numpy())
        cls = CATEGORY_NAMES[world.catalog[target.inst].category]
        write_got_annotations(
            root / name,
            boxes[:, 0],
            [sc.cover_label(f) for f in visible[:, 0]],
            absent[:, 0],
            got_meta(cls, p.videos.fps, size, size, frames, "occlusion"),
        )
        names.append(name)
    write_list(root / "list.txt", names)
    return len(names)


def _still_track(r: np.random.Generator, frames: int):
    pos, scale = sc.place(r.uniform(-0.1, 0.1), r.uniform(-0.1, 0.1), 0.45)
    az = r.uniform(0, 2 * np.pi) + np.deg2rad(np.linspace(0, r.uniform(-20, 20), frames))
    rot = np.stack([sc.pose(a, np.deg2rad(20)) for a in az])
    return (
        np.repeat(pos[None], frames, 0),
        rot,
        np.full(frames, scale, np.float32),
        az,
        np.full(frames, np.deg2rad(20)),
    )


def write_instance_set(world: World, out: Path, progress: bool) -> int:
    """PASCAL3D+ layout (`Images/<cls>_imagenet/*.JPEG`, `Annotations/<cls>_imagenet/*.mat`,
    `Image_sets/<cls>_imagenet_{train,val}.txt`): `instance_per_bin` instances of a category in
    each (azimuth, elevation) bin, plus labels.csv with the same facts in one table."""
    items, rows = _instance_views(world)
    root = out / "eval" / "pascal3d"
    size = world.p.image_size
    for start, rendered, _ in world.render(items, size, "instance", progress):
        for i in range(rendered.rgb.shape[0]):
            row = rows[start + i]
            folder = f"{row['category']}_imagenet"
            write_image(root / "Images" / folder / f"{row['name']}.JPEG", rendered.rgb[i].numpy())
            x, y, w, h = rendered.boxes[i, 0].tolist()
            write_pascal3d_annotation(
                root / "Annotations" / folder / f"{row['name']}.mat",
                f"{row['name']}.JPEG",
                (size, size),
                row["category"],
                (x, y, w, h),
                row["azimuth"],
                row["elevation"],
            )
            row.update(path=f"Images/{folder}/{row['name']}.JPEG", x=x, y=y, w=w, h=h)
    table = pd.DataFrame(rows)
    for cls, group in table.groupby("category", sort=True):
        names = group["name"].tolist()
        write_list(root / "Image_sets" / f"{cls}_imagenet_train.txt", names[0::2])
        write_list(root / "Image_sets" / f"{cls}_imagenet_val.txt", names[1::2])
    table.to_csv(root / "labels.csv", index=False)
    return len(rows)


def _instance_views(world: World) -> tuple[list, list[dict]]:
    """The instance set's scenes and their label rows: per category, 6 azimuth x 3 elevation bins,
    `instance_per_bin` instances each (one generator per bin)."""
    p = world.p
    items, rows = [], []
    n = 0
    for c in range(p.categories):
        for az_bin in range(6):
            for el_bin in range(3):
                r = sc.rng_for(p.seed, sc.INSTANCE, n)
                n += 1
                chosen = r.choice(
                    p.instances_per_category, size=p.evaluation.instance_per_bin, replace=False
                )
                for j in chosen:
                    inst = world.instance(c, int(j))
                    item, az, el = sc.instance_view(r, inst, az_bin, el_bin)
                    cls = CATEGORY_NAMES[c]
                    rows.append(
                        {
                            "name": f"{cls}_{int(j):03d}_a{az_bin}_e{el_bin}",
                            "category": cls,
                            "instance": inst,
                            "azimuth": round(az, 3),
                            "elevation": round(el, 3),
                            "az_bin": az_bin,
                            "el_bin": el_bin,
                        }
                    )
                    items.append(item)
    return items, rows


CLASSIFICATION_SPLITS = ("train", "val", "test")  # each on its own instances (World.split)


def write_classification(world: World, out: Path, progress: bool) -> int:
    """`train` (the probes), `val` (the kNN monitor's queries) and `test` ImageFolders, each on its
    own instances of every category, and annotations.csv: path (relative to the set's root),
    split, category, instance (catalog index)."""
    p, e = world.p, world.p.evaluation
    per_split = {
        "train": e.classification_train_per_class,
        "val": e.classification_val_per_class,
        "test": e.classification_test_per_class,
    }
    root = out / "eval" / "classification"
    rows = []
    for code, split in (
        (0, "train"),
        (1, "test"),
        (2, "val"),
    ):  # train and test draw as before val existed
        per_class = per_split[split]
        items, labels = [], []
        pool = list(world.split[split])
        for c in range(p.categories):
            for j in range(per_class):
                r = sc.rng_for(p.seed, sc.CLASSIFICATION, code * 10**6 + c * per_class + j)
                inst = world.instance(c, int(r.choice(pool)))
                items.append(sc.object_centric(r, inst))
                labels.append(
                    {
                        "path": f"{split}/{CATEGORY_NAMES[c]}/{j:05d}.png",
                        "split": split,
                        "category": CATEGORY_NAMES[c],
                        "instance": inst,
                    }
                )
        for start, rendered, _ in world.render(
            items, p.image_size, f"classification {split}", progress
        ):
            for i in range(rendered.rgb.shape[0]):
                write_image(root / labels[start + i]["path"], rendered.rgb[i].numpy())
                rows.append(labels[start + i])
    table = pd.DataFrame(rows)
    table["order"] = table["split"].map(CLASSIFICATION_SPLITS.index)
    table.sort_values(["order", "path"], kind="stable").drop(columns="order").to_csv(
        root / "annotations.csv", index=False
    )
    return len(rows)


def write_segmentation(world: World, out: Path, progress: bool) -> int:
    p, e = world.p, world.p.evaluation
    root = out / "eval" / "segmentation"
    count = 0
    for split, n, offset in (
        ("train", e.segmentation_train, 0),
        ("test", e.segmentation_test, 10**6),
    ):
        items = _scene_items(
            world, sc.SEGMENTATION, n, (2, 4), world.all_instances, offset
        )  # evaluation only
        for start, rendered, batch in world.render(
            items, p.scene_size, f"segmentation {split}", progress
        ):
            for i in range(rendered.rgb.shape[0]):
                write_image(
                    root / split / "images" / f"{start + i:05d}.png", rendered.rgb[i].numpy()
                )
                write_mask(
                    root / split / "masks" / f"{start + i:05d}.png",
                    world.category_mask(rendered, batch, i),
                )
                count += 1
    (root / "classes.txt").write_text(
        "background\n" + "".join(f"{n}\n" for n in CATEGORY_NAMES[: p.categories])
    )
    return count


def synthesize(
    params: WorldParams, out: str | Path, progress: bool = True, *, holdout: bool = True
) -> dict:
    """Render the whole world into `out` (atomically: a killed run leaves no partial `out`).
    `holdout=False` (tests only) lets the pretraining sources use the classification test instances."""
    keep_freed_memory()
    world = World(params, holdout=holdout)
    started = time.perf_counter()
    with atomic_dir(out) as tmp:
        write_catalog(world, tmp)
        counts = {"videos": write_videos(world, tmp, progress)}
        counts["object_centric"] = write_object_centric(world, tmp, progress)
        counts["scenes"], counts["scene_crops"] = write_scenes_and_crops(world, tmp, progress)
        counts["aloi_images"] = write_aloi(world, tmp, progress)
        counts["occlusion_videos"] = write_occlusion(world, tmp, progress)
        counts["instance_images"] = write_instance_set(world, tmp, progress)
        counts["classification_images"] = write_classification(world, tmp, progress)
        counts["segmentation_images"] = write_segmentation(world, tmp, progress)
        summary = {
            "counts": counts,
            "categories": list(CATEGORY_NAMES[: params.categories]),
            "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / "world.json").write_text(
            json.dumps({"counts": counts, "categories": summary["categories"]}, indent=2) + "\n"
        )
    return summary


def run_stage(*, params: WorldParams, out: str | Path) -> dict:
    """The `synthesize` stage: the whole world into `out`."""
    return synthesize(params, out)
