"""The MoCo v2 augmentations applied to a whole batch at once, with per-sample randomness
(`for_method`: the supervised baseline turns the colour operations and blur off).

Same semantics as `augment.mocov2` (torchvision, one image at a time): random resized crop
(area min_scale-1, aspect 3/4-4/3, torchvision's 10 tries then a centre crop), colour jitter
0.4/0.4/0.4/0.1 in a random order (p 0.8), grayscale (p 0.2), Gaussian blur (p 0.5, sigma
0.1-2), horizontal flip (p 0.5). Every random number of a sample comes from its own
generator, seeded by (seed, pass, index), so a sample's views do not depend on the batch it is
in, the number of processes, or the device. The crop and the resize are one `roi_align`
(sampling every source pixel of a bin: an averaging, antialiased resize when shrinking); the
colour operations are torchvision's formulas with one factor per sample, written in place
(kornia's allocating versions took 3-7x longer on the 2-core CPU; its blur is used as is).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from torchvision.ops import roi_align

from demystify.backbone import IMAGENET_MEAN, IMAGENET_STD
from demystify.core.methods import METHODS

TRIES = 10  # torchvision's RandomResizedCrop attempts before its centre-crop fallback
# the columns of a view's uniforms
SCALE, RATIO, TOP, LEFT = slice(0, TRIES), slice(TRIES, 2 * TRIES), 2 * TRIES, 2 * TRIES + 1
JITTER, BRIGHT, CONTRAST, SATUR, HUE, ORDER = 22, 23, 24, 25, 26, slice(27, 31)
GRAY, BLUR, SIGMA, FLIP = 31, 32, 33, 34
UNIFORMS = 35


def sample_uniforms(seed: int, pass_: int, index: int, views: int) -> np.ndarray:
    """[views, UNIFORMS] uniforms in [0, 1): every random choice of one sample's views."""
    rng = np.random.default_rng(zlib.crc32(f"{seed}/{pass_}/{index}".encode()))
    return rng.random((views, UNIFORMS))


@dataclass(frozen=True)
class BatchMoCoV2:
    size: int
    min_scale: float = 0.2
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    flip_p: float = 0.5

    @property
    def kernel(self) -> int:  # ~10 % of the side, odd, as augment.mocov2
        return max(3, int(0.1 * self.size) // 2 * 2 + 1)

    def crop_boxes(self, regions: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """[B, 4] float64 (x0, y0, x1, y1) of each sample's crop: torchvision's RandomResizedCrop
        parameters drawn inside each sample's region [B, 4] (x0, y0, x1, y1, whole pixels)."""
        width, height = (
            (regions[:, 2] - regions[:, 0])[:, None],
            (regions[:, 3] - regions[:, 1])[:, None],
        )
        area = width * height * (self.min_scale + (1 - self.min_scale) * u[:, SCALE])
        lo, hi = math.log(3 / 4), math.log(4 / 3)
        ratio = torch.exp(lo + (hi - lo) * u[:, RATIO])
        w, h = torch.round(torch.sqrt(area * ratio)), torch.round(torch.sqrt(area / ratio))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.argmax(fits.to(torch.int8), dim=1)[:, None]  # the first try that fits
        w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
        width, height = width[:, 0], height[:, 0]
        # fallback (no try fits): the largest centred crop with the aspect clamped to 3/4-4/3
        aspect = width / height
        fw = torch.where(
            aspect < 3 / 4, width, torch.where(aspect > 4 / 3, torch.round(height * 4 / 3), width)
        )
        fh = torch.where(aspect < 3 / 4, torch.round(width / (3 / 4)), height)
        none = ~fits.any(dim=1)
        w, h = torch.where(none, fw, w), torch.where(none, fh, h)
        top = torch.floor(u[:, TOP] * (height - h + 1))
        left = torch.floor(u[:, LEFT] * (width - w + 1))
        top = torch.where(none, torch.div(height - h, 2, rounding_mode="floor"), top)
        left = torch.where(none, torch.div(width - w, 2, rounding_mode="floor"), left)
        x0, y0 = regions[:, 0] + left, regions[:, 1] + top
        return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)

    def __call__(
        self,
        images: torch.Tensor,
        sources: torch.Tensor,
        regions: torch.Tensor,
        uniforms: torch.Tensor,
    ) -> torch.Tensor:
        """images: uint8 [M, 3, H, W] (padded; M distinct sources), sources: [B] index into images,
        regions: [B, 4] float (x0, y0, x1, y1) each sample's region of its source, uniforms: [B, UNIFORMS]
        float64 (sample_uniforms). Returns float32 [B, 3, size, size], normalised as augment.mocov2."""
        u = uniforms.to(torch.float64)
        boxes = self.crop_boxes(regions.to(torch.float64), u)
        rois = (
            torch.cat([sources[:, None].to(torch.float64), boxes], dim=1)
            .to(torch.float32)
            .to(images.device)
        )
        x = roi_align(
            images.to(torch.float32),
            rois,
            output_size=self.size,
            spatial_scale=1.0,
            sampling_ratio=-1,
            aligned=True,
        ).mul_(1 / 255)
        u = u.to(torch.float32).to(images.device)
        x = self._colour(x, u)
        x = self._where(u[:, GRAY] < self.gray_p, grayscale(x).expand_as(x), x)
        blur = u[:, BLUR] < self.blur_p
        if bool(blur.any()):
            sigma = (0.1 + 1.9 * u[blur, SIGMA])[:, None].expand(-1, 2)
            x = x.clone()
            x[blur] = gaussian_blur2d(x[blur], self.kernel, sigma, border_type="reflect")
        x = self._where(u[:, FLIP] < self.flip_p, x.flip(-1), x)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
        return x.sub_(mean).div_(std) if x.is_contiguous() else (x - mean) / std

    def _colour(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, saturation (factors 0.6-1.4) and hue (+-0.1 turn), each sample in
        its own random order (torchvision draws a permutation of the four), on the p = jitter_p share."""
        on = u[:, JITTER] < self.jitter_p
        factors = [
            0.6 + 0.8 * u[:, BRIGHT],
            0.6 + 0.8 * u[:, CONTRAST],
            0.6 + 0.8 * u[:, SATUR],
            -0.1 + 0.2 * u[:, HUE],
        ]
        ops = [brightness, contrast, saturation, hue]
        order = torch.argsort(u[:, ORDER], dim=1)  # a uniform random permutation per sample
        x = x.clone()
        for position in range(4):
            for op_index, op in enumerate(ops):
                picked = on & (order[:, position] == op_index)
                if bool(picked.any()):
                    x[picked] = op(x[picked], factors[op_index][picked])
        return x

    @staticmethod
    def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask[:, None, None, None], a, b)


def for_method(method: str, size: int, min_scale: float) -> BatchMoCoV2:
    """The augmentation a variant trains with (its method's `augment`, core/methods.py): MoCo v2's
    for MoCo; for the supervised baseline its standard ImageNet recipe, random resized crop and flip
    only (augment.crop_flip), so supervised is not handed the colour and blur invariances the
    claims credit to MoCo. The crop and flip draw the same uniforms either way: with one seed both
    see the same crops."""
    if METHODS[method].augment == "crop_flip":
        return BatchMoCoV2(size, min_scale, jitter_p=0.0, gray_p=0.0, blur_p=0.0)
    return BatchMoCoV2(size, min_scale)


# torchvision.transforms.v2.functional's colour adjustments, batched: one factor per sample
# ([B]), images float [B, 3, H, W] in [0, 1].


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] luma with torchvision's weights."""
    return (0.2989 * x[:, 0:1]).add_(x[:, 1:2], alpha=0.587).add_(x[:, 2:3], alpha=0.114)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return x.mul(factor[:, None, None, None]).clamp_(0, 1)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """A blend with the image's mean luma."""
    f = factor[:, None, None, None]
    return x.mul(f).add_(grayscale(x).mean((-2, -1), keepdim=True) * (1 - f)).clamp_(0, 1)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """A blend with the image's luma."""
    f = factor[:, None, None, None]
    return x.mul(f).add_(grayscale(x).mul_(1 - f)).clamp_(0, 1)


def hue(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by `turn` (a fraction of a full turn, -0.5-0.5), keeping S and V."""
    high, low = x.max(-3, keepdim=True)[0], x.min(-3, keepdim=True)[0]
    chroma = high - low
    inverse = 1.0 / chroma.clamp_min(1e-12)  # grey pixels: any hue, chroma 0 keeps them grey
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    h = torch.where(
        high == r,
        (g - b) * inverse,
        torch.where(high == g, (b - r) * inverse + 2, (r - g) * inverse + 4),
    )
    h.add_(6 * turn[:, None, None, None] + 6)  # in sixths of a turn, kept positive for remainder
    out = torch.empty_like(x)
    for channel, offset in enumerate(
        (5.0, 3.0, 1.0)
    ):  # HSV to RGB: V - C * clamp(min(k, 4 - k), 0, 1)
        k = torch.remainder(h + offset, 6)
        torch.minimum(k, 4 - k, out=out[:, channel : channel + 1])
    return out.clamp_(0, 1).mul_(-chroma).add_(high)
