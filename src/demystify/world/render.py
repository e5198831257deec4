"""A batched, vectorised ray caster in torch, with exact ground truth.

The camera sits at the origin looking down -z. Every object is a union of analytic primitives
(ellipsoid, box, capped cylinder, see shapes.py). Rays are intersected with all primitives of a
batch at once: the per-ray linear algebra is folded into a few matrix products, so the only
per-pixel, per-primitive work is a handful of elementwise ops. No Python loop runs per pixel or
per primitive; the loops are over the three primitive types.

Ground truth comes from the same intersections: the visible object per pixel (nearest hit), the
amodal mask of each object (any hit of its own primitives, occluders ignored), hence boxes,
masks and the visible fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from demystify.world.shapes import (
    BOX,
    CYLINDER,
    ELLIPSOID,
    MAX_PARTS,
    PRIMITIVE_TYPES,
    Instance,
    rotation,
)

FOCAL = 2.5  # normalised focal length (image half-short-side = 1): about 44 degrees field of view
INF = float("inf")


@dataclass
class PrimitiveTable:
    """Primitives of every catalog instance, padded per type: tensors of shape (N, P_type, ...)."""

    center: dict[int, torch.Tensor]  # (N, P, 3)
    rot: dict[int, torch.Tensor]  # (N, P, 3, 3)
    half: dict[int, torch.Tensor]  # (N, P, 3)
    part: dict[int, torch.Tensor]  # (N, P) long
    valid: dict[int, torch.Tensor]  # (N, P) bool
    category: torch.Tensor  # (N,) long, -1 for occluders
    part_colors: torch.Tensor  # (N, MAX_PARTS, 3)
    texture: torch.Tensor  # (N,) long
    texture_freq: torch.Tensor  # (N,)
    texture_contrast: torch.Tensor  # (N,)
    texture_color: torch.Tensor  # (N, 3)

    @classmethod
    def from_catalog(cls, catalog: list[Instance]) -> PrimitiveTable:
        n = len(catalog)
        fields: dict[str, dict[int, torch.Tensor]] = {
            k: {} for k in ("center", "rot", "half", "part", "valid")
        }
        for kind in PRIMITIVE_TYPES:
            per = [[p for p in inst.primitives if p.kind == kind] for inst in catalog]
            width = max(1, max(len(p) for p in per))
            center = np.zeros((n, width, 3), np.float32)
            rot = np.tile(np.eye(3, dtype=np.float32), (n, width, 1, 1))
            half = np.ones((n, width, 3), np.float32)
            part = np.zeros((n, width), np.int64)
            valid = np.zeros((n, width), bool)
            for i, prims in enumerate(per):
                for j, p in enumerate(prims):
                    center[i, j], rot[i, j], half[i, j] = p.center, rotation(p.euler), p.half
                    part[i, j], valid[i, j] = min(p.part, MAX_PARTS - 1), True
            for name, arr in zip(fields, (center, rot, half, part, valid), strict=True):
                fields[name][kind] = torch.from_numpy(arr)
        return cls(
            **fields,
            category=torch.tensor([inst.category for inst in catalog]),
            part_colors=torch.from_numpy(
                np.stack([i.part_colors for i in catalog]).astype(np.float32)
            ),
            texture=torch.tensor([i.texture for i in catalog]),
            texture_freq=torch.tensor([i.texture_freq for i in catalog], dtype=torch.float32),
            texture_contrast=torch.tensor(
                [i.texture_contrast for i in catalog], dtype=torch.float32
            ),
            texture_color=torch.from_numpy(
                np.stack([i.texture_color for i in catalog]).astype(np.float32)
            ),
        )


@dataclass
class SceneBatch:
    """B scenes of up to K objects each (numpy, float32 unless noted)."""

    inst: np.ndarray  # (B, K) int64 catalog index, -1 = empty slot
    pos: np.ndarray  # (B, K, 3) object centre in camera space (z < 0)
    rot: np.ndarray  # (B, K, 3, 3) object rotation
    scale: np.ndarray  # (B, K) object radius in world units
    light_dir: np.ndarray  # (B, 3) unit vector towards the light
    light_rgb: np.ndarray  # (B, 3)
    ambient: np.ndarray  # (B,)
    background: np.ndarray  # (B, 10): kind, freq, angle, phase, rgb1, rgb2

    def __len__(self) -> int:
        return self.inst.shape[0]

    def slice(self, start: int, stop: int) -> SceneBatch:
        return SceneBatch(*(getattr(self, f.name)[start:stop] for f in fields(self)))


@dataclass
class Rendered:
    rgb: torch.Tensor  # (B, H, W, 3) uint8
    slot: torch.Tensor  # (B, H, W) int64, visible object slot, -1 background
    amodal: torch.Tensor  # (B, K, H, W) bool, each object's own silhouette
    visible_area: torch.Tensor  # (B, K) pixels
    amodal_area: torch.Tensor  # (B, K) pixels
    boxes: torch.Tensor  # (B, K, 4) x, y, w, h of the visible mask (zeros when invisible)


def pixel_rays(height: int, width: int) -> torch.Tensor:
    """(H*W, 3) unnormalised ray directions through pixel centres (z = -1)."""
    half = min(height, width) / 2
    ys = (torch.arange(height, dtype=torch.float32) + 0.5 - height / 2) / half
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / half
    v, u = torch.meshgrid(ys, xs, indexing="ij")
    d = torch.stack([u / FOCAL, -v / FOCAL, -torch.ones_like(u)], dim=-1)
    return d.reshape(-1, 3)


def _compact(valid: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop primitive columns that are padding in every scene of the batch."""
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    keep = max(1, int(valid.sum(1).max()))
    order = order[:, :keep]
    out = [torch.gather(valid, 1, order)]
    for t in tensors:
        idx = order.view(*order.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
        out.append(torch.gather(t, 1, idx))
    return tuple(out)


def _quadratic_features(d: torch.Tensor) -> torch.Tensor:
    x, y, z = d.unbind(-1)
    return torch.stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z], -1)


def _quadratic_coeffs(a: torch.Tensor) -> torch.Tensor:
    """For rows of A (B, P, r, 3): coefficients (B, 6, P) of |A d|^2 against _quadratic_features."""
    g = a.transpose(-1, -2) @ a  # (B, P, 3, 3)
    c = torch.stack(
        [g[..., 0, 0], g[..., 1, 1], g[..., 2, 2], g[..., 0, 1], g[..., 0, 2], g[..., 1, 2]], -1
    )
    return c.transpose(1, 2)


def _intersect(
    kind: int, d: torch.Tensor, dq: torch.Tensor, a: torch.Tensor, o: torch.Tensor
) -> torch.Tensor:
    """Entry distance t (B, R, P) along rays d (R, 3) into primitives in scaled local frames.

    a: (B, P, 3, 3) maps a world direction to the unit-primitive frame; o: (B, P, 3) the camera
    origin in that frame. Misses are +inf.
    """
    if kind in (ELLIPSOID, CYLINDER):
        rows = a if kind == ELLIPSOID else a[:, :, [0, 2]]
        orow = o if kind == ELLIPSOID else o[:, :, [0, 2]]
        qa = dq @ _quadratic_coeffs(rows)  # |A d|^2 over the quadric's axes
        qb = d @ (rows.transpose(-1, -2) @ orow.unsqueeze(-1)).squeeze(-1).transpose(
            1, 2
        )  # o . A d
        qc = (orow * orow).sum(-1).unsqueeze(1) - 1.0
        qa = qa.clamp_min(1e-12)
        disc = qb * qb - qa * qc
        root = disc.clamp_min(0).sqrt()
        near, far = (-qb - root) / qa, (-qb + root) / qa
        hit = disc >= 0
        if kind == CYLINDER:  # clip by the caps |y| <= 1
            dy = d @ a[:, :, 1].transpose(1, 2)
            oy = o[:, :, 1].unsqueeze(1)
            inv = 1.0 / torch.where(dy.abs() < 1e-12, torch.full_like(dy, 1e-12), dy)
            t1, t2 = (-1.0 - oy) * inv, (1.0 - oy) * inv
            near = torch.maximum(near, torch.minimum(t1, t2))
            far = torch.minimum(far, torch.maximum(t1, t2))
            hit &= near <= far
    else:  # BOX: slabs of the unit cube
        b, p = o.shape[:2]
        ds = (d @ a.reshape(b, p * 3, 3).transpose(1, 2)).view(b, -1, p, 3)
        inv = 1.0 / torch.where(ds.abs() < 1e-12, torch.full_like(ds, 1e-12), ds)
        oo = o.unsqueeze(1)
        t1, t2 = (-1.0 - oo) * inv, (1.0 - oo) * inv
        near = torch.minimum(t1, t2).amax(-1)
        far = torch.maximum(t1, t2).amin(-1)
        hit = near <= far
    hit &= near > 0
    return torch.where(hit, near, torch.full_like(near, INF))


def _local_normal(kind: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Normal in the unit-primitive frame at surface point q (R, 3) for primitive kinds (R,)."""
    ell = q
    axis = q.abs().argmax(-1, keepdim=True)
    box = torch.zeros_like(q).scatter(-1, axis, torch.gather(q, -1, axis).sign())
    radial = torch.stack([q[:, 0], torch.zeros_like(q[:, 0]), q[:, 2]], -1)
    cap = torch.stack([torch.zeros_like(q[:, 0]), q[:, 1].sign(), torch.zeros_like(q[:, 0])], -1)
    on_cap = ((q[:, 1].abs() - 1).abs() < (radial.norm(dim=-1) - 1).abs()).unsqueeze(-1)
    cyl = torch.where(on_cap, cap, radial)
    k = kind.unsqueeze(-1)
    return torch.where(k == ELLIPSOID, ell, torch.where(k == BOX, box, cyl))


def _texture(kind: torch.Tensor, freq: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Solid texture mask in [0, 1] at object-space points q (R, 3)."""
    f = freq.unsqueeze(-1) * q
    stripes = (torch.sin(np.pi * f[:, 1]) > 0).float()
    checker = (torch.floor(f).sum(-1) % 2).abs()
    dots = ((f - torch.floor(f) - 0.5).norm(dim=-1) < 0.3).float()
    waves = (torch.sin(np.pi * f[:, 0] + 2 * torch.sin(np.pi * f[:, 2])) > 0).float()
    table = torch.stack([torch.zeros_like(stripes), stripes, checker, dots, waves], -1)
    return torch.gather(table, -1, kind.unsqueeze(-1)).squeeze(-1)


def _background(bg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, 3) procedural background: solid, gradient, stripes, checker or blobs."""
    half = min(height, width) / 2
    ys = (torch.arange(height, dtype=torch.float32) + 0.5 - height / 2) / half
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / half
    v, u = (t.reshape(1, -1) for t in torch.meshgrid(ys, xs, indexing="ij"))
    kind, freq, angle, phase = (bg[:, i : i + 1] for i in range(4))
    c1, c2 = bg[:, 4:7], bg[:, 7:10]
    along = u * torch.cos(angle) + v * torch.sin(angle)
    across = -u * torch.sin(angle) + v * torch.cos(angle)
    patterns = torch.stack(
        [
            torch.zeros_like(along),
            (along + 1.5) / 3,
            (torch.sin(freq * along + phase) > 0).float(),
            (torch.floor(freq * along / 2) + torch.floor(freq * across / 2)) % 2,
            0.5 + 0.25 * (torch.sin(freq * along + phase) + torch.sin(0.7 * freq * across - phase)),
        ],
        -1,
    )
    m = torch.gather(patterns, -1, kind.long().clamp(0, 4).unsqueeze(-1).expand(-1, u.shape[1], 1))
    return c1.unsqueeze(1) * (1 - m) + c2.unsqueeze(1) * m


class Renderer:
    """Renders SceneBatch objects at a fixed resolution; create once, call per batch."""

    def __init__(self, catalog: list[Instance], height: int, width: int, specular: float = 0.15):
        self.table = PrimitiveTable.from_catalog(catalog)
        self.height, self.width = height, width
        self.rays = pixel_rays(height, width)
        self.rays_q = _quadratic_features(self.rays)
        self.specular = specular

    def render_chunked(self, scenes: SceneBatch, chunk: int) -> Rendered:
        """Render a long batch (e.g. all frames of a clip) `chunk` scenes at a time."""
        parts = [self(scenes.slice(i, i + chunk)) for i in range(0, len(scenes), chunk)]
        return Rendered(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Rendered)))

    @torch.no_grad()
    def __call__(self, scenes: SceneBatch) -> Rendered:
        objects = _Objects.of(scenes)
        b, k = objects.inst.shape
        t_all, hits = self._cast(objects)
        # Amodal silhouettes: any hit of an object's own primitives.
        onehot = torch.nn.functional.one_hot(hits.slot, k).float()  # (B, P, K)
        amodal = (torch.isfinite(t_all).float() @ onehot) > 0  # (B, R, K)
        rgb = self._shade(scenes, objects, hits)
        h, w = self.height, self.width
        vis_masks = hits.vis_slot.unsqueeze(-1) == torch.arange(k).view(1, 1, k)  # (B, R, K)
        boxes = mask_boxes(vis_masks.permute(0, 2, 1).reshape(b, k, h, w))
        return Rendered(
            rgb=(rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).view(b, h, w, 3),
            slot=hits.vis_slot.view(b, h, w),
            amodal=amodal.permute(0, 2, 1).reshape(b, k, h, w),
            visible_area=vis_masks.sum(1),
            amodal_area=amodal.sum(1),
            boxes=boxes,
        )

    def _cast(self, objects: _Objects) -> tuple[torch.Tensor, _Hits]:
        """Every ray against every primitive: the hit distances (B, R, P) and the nearest hits."""
        hits, metas = [], []
        for kind in PRIMITIVE_TYPES:
            t, meta = self._cast_kind(objects, kind)
            hits.append(t)
            metas.append(meta)
        t_all = torch.cat(hits, -1)  # (B, R, P)
        kind_all, slot_all, part_all, a_all, o_all = (
            torch.cat(m, 1) for m in zip(*metas, strict=True)
        )
        t_min, arg = t_all.min(-1)
        hit = torch.isfinite(t_min)
        vis_slot = torch.where(hit, torch.gather(slot_all, 1, arg), torch.full_like(arg, -1))
        return t_all, _Hits(t_min, arg, hit, vis_slot, kind_all, slot_all, part_all, a_all, o_all)

    def _cast_kind(self, objects: _Objects, kind: int) -> tuple[torch.Tensor, tuple]:
        """The rays against the primitives of one type: distances (B, R, P) (INF: no hit) and per
        primitive (type, slot, part, world-to-unit-primitive map, camera in the primitive's frame)."""
        tb, idx, pos, rot, scale = self.table, objects.idx, objects.pos, objects.rot, objects.scale
        b, k = idx.shape
        valid = tb.valid[kind][idx] & objects.present.unsqueeze(-1)  # (B, K, P)
        p = valid.shape[-1]
        rot_w = rot.unsqueeze(2) @ tb.rot[kind][idx]  # (B, K, P, 3, 3) primitive -> world
        center_w = pos.unsqueeze(2) + scale[..., None, None] * (
            rot.unsqueeze(2) @ tb.center[kind][idx].unsqueeze(-1)
        ).squeeze(-1)
        half_w = scale[..., None, None] * tb.half[kind][idx]
        slot = torch.arange(k).view(1, k, 1).expand(b, k, p)
        flat = [
            t.reshape(b, k * p, *t.shape[3:])
            for t in (valid, rot_w, center_w, half_w, slot, tb.part[kind][idx])
        ]
        valid, rot_w, center_w, half_w, slot, part = _compact(*flat)
        # world direction -> unit-primitive frame
        a = rot_w.transpose(-1, -2) / half_w.unsqueeze(-1)
        o = (a @ (-center_w).unsqueeze(-1)).squeeze(-1)
        t = _intersect(kind, self.rays, self.rays_q, a, o)
        t = torch.where(valid.unsqueeze(1), t, torch.full_like(t, INF))
        return t, (torch.full_like(slot, kind), slot, part, a, o)

    def _shade(self, scenes: SceneBatch, objects: _Objects, hits: _Hits) -> torch.Tensor:
        """(B, R, 3) linear RGB: the lit surface at each hit pixel, the background elsewhere."""
        background = _background(
            torch.from_numpy(scenes.background).float(), self.height, self.width
        )
        # Only the hit pixels are shaded: gather the winning primitive of each.
        bi, ri = hits.hit.nonzero(as_tuple=True)
        pi = hits.arg[bi, ri]
        t = hits.t_min[bi, ri].unsqueeze(-1)
        x = t * self.rays[ri]  # hit point, camera space
        a = hits.a[bi, pi]  # (n, 3, 3)
        q = (a @ x.unsqueeze(-1)).squeeze(-1) + hits.o[bi, pi]  # unit-primitive frame
        n_local = _local_normal(hits.kind[bi, pi], q)
        normal = torch.nn.functional.normalize(
            (a.transpose(-1, -2) @ n_local.unsqueeze(-1)).squeeze(-1), dim=-1
        )
        view = torch.nn.functional.normalize(-x, dim=-1)
        normal = torch.where((normal * view).sum(-1, keepdim=True) < 0, -normal, normal)
        albedo = self._albedo(objects, hits, (bi, ri, pi), x)
        out = background.clone()
        out[bi, ri] = self._light(scenes, bi, albedo, normal, view)
        return out

    def _albedo(
        self, objects: _Objects, hits: _Hits, where: tuple[torch.Tensor, ...], x: torch.Tensor
    ) -> torch.Tensor:
        """The surface colour at hit points `x` (batch, ray and primitive indices `where`): the
        part's colour under the object's texture, in the object's own frame."""
        tb = self.table
        bi, ri, pi = where
        s = hits.vis_slot[bi, ri]
        obj = objects.inst[bi, s]
        q_obj = (
            (objects.rot[bi, s].transpose(-1, -2) @ (x - objects.pos[bi, s]).unsqueeze(-1)).squeeze(
                -1
            )
        ) / objects.scale[bi, s].unsqueeze(-1)
        pattern = _texture(tb.texture[obj], tb.texture_freq[obj], q_obj) * tb.texture_contrast[obj]
        base = tb.part_colors[obj, hits.part[bi, pi]]
        return base * (1 - pattern.unsqueeze(-1)) + tb.texture_color[obj] * pattern.unsqueeze(-1)

    def _light(
        self,
        scenes: SceneBatch,
        bi: torch.Tensor,
        albedo: torch.Tensor,
        normal: torch.Tensor,
        view: torch.Tensor,
    ) -> torch.Tensor:
        """Blinn-Phong: ambient plus diffuse of the albedo, plus a specular highlight, in the
        light's colour (scenes of batch indices `bi`)."""
        light_dir = torch.from_numpy(scenes.light_dir).float()
        light_rgb = torch.from_numpy(scenes.light_rgb).float()
        ambient = torch.from_numpy(scenes.ambient).float()
        ldir = light_dir[bi]
        diffuse = (normal * ldir).sum(-1).clamp_min(0)
        halfway = torch.nn.functional.normalize(ldir + view, dim=-1)
        spec = (normal * halfway).sum(-1).clamp_min(0) ** 20 * self.specular
        amb = ambient[bi]
        return (
            albedo * (amb + (1 - amb) * diffuse).unsqueeze(-1) * light_rgb[bi]
            + spec.unsqueeze(-1) * light_rgb[bi]
        )


@dataclass(frozen=True)
class _Objects:
    """A SceneBatch's objects as tensors: catalog index (-1 empty), which slots hold one, the
    index clamped for gathering, position, rotation and scale."""

    inst: torch.Tensor
    present: torch.Tensor
    idx: torch.Tensor
    pos: torch.Tensor
    rot: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def of(cls, scenes: SceneBatch) -> _Objects:
        inst = torch.from_numpy(scenes.inst).long()
        return cls(
            inst=inst,
            present=inst >= 0,
            idx=inst.clamp_min(0),
            pos=torch.from_numpy(scenes.pos).float(),
            rot=torch.from_numpy(scenes.rot).float(),
            scale=torch.from_numpy(scenes.scale).float(),
        )


@dataclass(frozen=True)
class _Hits:
    """The nearest hit of each ray (distance, primitive, whether any, visible slot or -1) and,
    per primitive of the batch, its type, slot, part and frame (a: world direction -> unit
    primitive; o: the camera in that frame)."""

    t_min: torch.Tensor  # (B, R)
    arg: torch.Tensor  # (B, R) index of the nearest primitive
    hit: torch.Tensor  # (B, R) bool
    vis_slot: torch.Tensor  # (B, R)
    kind: torch.Tensor  # (B, P)
    slot: torch.Tensor  # (B, P)
    part: torch.Tensor  # (B, P)
    a: torch.Tensor  # (B, P, 3, 3)
    o: torch.Tensor  # (B, P, 3)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) bool -> (B, K, 4) x, y, w, h of each mask's extent (zeros when empty)."""
    b, k, h, w = masks.shape
    rows, cols = masks.any(-1), masks.any(-2)
    any_ = rows.any(-1)
    y0 = rows.float().argmax(-1)
    y1 = h - 1 - rows.flip(-1).float().argmax(-1)
    x0 = cols.float().argmax(-1)
    x1 = w - 1 - cols.flip(-1).float().argmax(-1)
    box = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], -1).float()
    return torch.where(any_.unsqueeze(-1), box, torch.zeros_like(box))


def keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the OS after every batch.

    The renderer allocates the same few tens of MB per batch; with glibc's defaults each
    allocation is a fresh mmap whose first touch page-faults, which halves throughput on small
    machines. Raising the mmap/trim thresholds keeps those blocks in the heap. A no-op off glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 512 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1024 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
