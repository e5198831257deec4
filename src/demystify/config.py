"""Typed schema of params.yaml.

Every stage loads its sections through :func:`load`, which rejects an unknown key, a wrong
type or an impossible value *before any work*, with a message naming the key and the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)

PositiveInt = Field(gt=0)


def _check_range(pair: tuple[int, int]) -> tuple[int, int]:
    if pair[0] < 0:
        raise ValueError(f"negative minimum {pair[0]}")
    if pair[0] > pair[1]:
        raise ValueError(f"minimum {pair[0]} > maximum {pair[1]}")
    return pair


# [min, max] of a count. YAML has lists, not tuples: accept a list for the pair itself, but
# keep its items strict ints.
Range = Annotated[tuple[StrictInt, StrictInt], Field(strict=False), AfterValidator(_check_range)]


class ConfigError(ValueError):
    """A params.yaml problem, already phrased for the user."""


class Section(BaseModel):
    # strict: "5" is not 5; forbid: a misspelt key is an error, not a silent default;
    # allow_inf_nan=False: YAML's .inf / .nan pass the gt/ge bounds (inf > 0), so every float
    # (lists of floats too) must be finite.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class VideoWorld(Section):
    count: int = PositiveInt
    frames: int = Field(ge=2)
    fps: float = Field(gt=0, le=240)
    width: int = Field(ge=16, le=4096)
    height: int = Field(ge=16, le=4096)
    distractors: Range
    occluders: Range
    spin_deg: Range  # how far the target object turns (azimuth, degrees) over the whole clip

    @model_validator(mode="after")
    def _check(self) -> VideoWorld:
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width/height must be even for H.264 (got {self.width}x{self.height})")
        return self


class CorporaWorld(Section):
    object_centric_per_category: int = PositiveInt
    scenes: int = PositiveInt
    objects_per_scene: Range
    crop_margin: float = Field(ge=0, le=2)

    @model_validator(mode="after")
    def _check(self) -> CorporaWorld:
        if self.objects_per_scene[0] < 1:
            raise ValueError(f"objects_per_scene: minimum {self.objects_per_scene[0]} < 1")
        return self


class EvaluationWorld(Section):
    aloi_instances_per_category: int = PositiveInt
    aloi_view_step_deg: int = Field(gt=0, le=180)
    occlusion_videos: int = PositiveInt
    occlusion_frames: int = Field(ge=9)
    instance_per_bin: int = Field(ge=2)
    classification_train_per_class: int = PositiveInt
    classification_test_per_class: int = PositiveInt
    segmentation_train: int = PositiveInt
    segmentation_test: int = PositiveInt

    @model_validator(mode="after")
    def _check(self) -> EvaluationWorld:
        if 360 % self.aloi_view_step_deg:
            raise ValueError(f"aloi_view_step_deg: {self.aloi_view_step_deg} does not divide 360")
        return self


class WorldParams(Section):
    seed: int = Field(ge=0)
    categories: int = Field(ge=2, le=10)
    instances_per_category: int = Field(ge=2)
    image_size: int = Field(ge=16, le=1024)
    scene_size: int = Field(ge=16, le=2048)
    render_batch: int = PositiveInt
    videos: VideoWorld
    corpora: CorporaWorld
    evaluation: EvaluationWorld

    @model_validator(mode="after")
    def _check(self) -> WorldParams:
        if self.evaluation.aloi_instances_per_category > self.instances_per_category:
            raise ValueError(
                "evaluation.aloi_instances_per_category: "
                f"{self.evaluation.aloi_instances_per_category} > instances_per_category "
                f"{self.instances_per_category}"
            )
        if self.evaluation.instance_per_bin > self.instances_per_category:
            raise ValueError(
                f"evaluation.instance_per_bin: {self.evaluation.instance_per_bin} > "
                f"instances_per_category {self.instances_per_category}"
            )
        return self


class DataParams(Section):
    source: Literal["synthetic", "folder"]
    root: str = Field(min_length=1)  # annotated image corpora under <root>/corpora (check_data); the world's by default
    videos: str = Field(min_length=1)  # the training videos (extract_frames, mine_pairs, check_data)

    @model_validator(mode="after")
    def _check(self) -> DataParams:
        for name in ("root", "videos"):
            if getattr(self, name) == "???":
                raise ValueError(f"{name}: not set (give a path, e.g. -S data.{name}=/path)")
        return self


class FramesParams(Section):
    fps: float = Field(gt=0, le=240)
    size: int = Field(ge=8, le=4096)
    jpeg_quality: int = Field(ge=2, le=31)
    max_rejected: float = Field(ge=0, le=1)
    workers: int = Field(ge=0)  # 0: one per core
    decode_timeout_s: float = Field(gt=0)  # one video's ffmpeg decode; longer: rejected as timed out


class PairsParams(Section):
    source: Literal["frames", "tracker", "annotations"]
    seed: int = Field(ge=0)
    min_gap: int = Field(ge=1)  # in frames of the extracted rate
    max_gap: int = Field(ge=1)
    pairs_per_video: int = PositiveInt
    regions_per_frame: int = PositiveInt
    proposals: Literal["motion", "saliency"]
    motion_threshold: float = Field(gt=0, le=255)  # grey-level difference from the background
    min_area: float = Field(gt=0, lt=1)  # share of the frame
    max_area: float = Field(gt=0, le=1)
    tracker: Literal["csrt", "kcf", "mil", "medianflow"]
    min_confidence: float = Field(ge=0, le=1)  # forward-backward IoU
    snap_iou: float = Field(ge=0, le=1)  # a proposal in frame b must overlap the tracked box this much; 0: off
    max_scale_change: float = Field(ge=1)
    max_outside: float = Field(ge=0, le=1)  # share of the tracked box allowed outside the frame
    match_iou: float = Field(ge=0, le=1)  # proposal-to-ground-truth match for iou_gt
    grid_pairs: int = Field(ge=0)
    workers: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> PairsParams:
        if self.min_gap > self.max_gap:
            raise ValueError(f"min_gap {self.min_gap} > max_gap {self.max_gap}")
        if self.min_area >= self.max_area:
            raise ValueError(f"min_area {self.min_area} >= max_area {self.max_area}")
        return self




class CentricityRange(Section):
    """What "object-centric" means: medians over a corpus's images."""

    min_largest_share: float = Field(ge=0, le=1)  # box area of the largest object / image area
    max_objects: float = Field(ge=1)  # objects per image
    max_center_offset: float = Field(ge=0, le=1)  # main object's centre from the image centre / half-diagonal


class ChecksParams(Section):
    fail_on: list[Literal["frames_manifest", "pairs_manifest", "centricity"]]
    object_centric: CentricityRange
    box_tolerance: float = Field(ge=0)  # pixels a box may exceed the frame by (rounding)


class PretrainParams(Section):
    arch: Literal["resnet18", "resnet34", "resnet50"]
    image_size: int = Field(ge=16, le=1024)
    steps: int = PositiveInt  # optimizer steps, the same for every trained variant (equal budgets)
    warmup_steps: int = Field(ge=0)  # linear warm-up of the learning rate, then cosine to 0
    log_every: int = PositiveInt  # loss, lr and the kNN monitor every this many steps (and at the last)
    batch_size: int = PositiveInt  # per process
    lr: float = Field(gt=0)  # per 256 images of the global batch
    weight_decay: float = Field(ge=0)
    sgd_momentum: float = Field(ge=0, lt=1)
    moco_momentum: float = Field(gt=0, lt=1)
    temperature: float = Field(gt=0)
    queue_size: int = PositiveInt
    dim: int = PositiveInt
    mlp: bool
    head_bn: bool  # BatchNorm in the projection head's hidden layer (SimCLR / MoCo v3 style)
    bn_splits: int = PositiveInt
    min_crop_scale: float = Field(gt=0, le=1)
    workers: int = Field(ge=0)  # loader processes decoding a corpus too big to hold (see resident_mb)
    resident_mb: int = Field(ge=0)  # decode the corpus once and hold it when it fits (0: always stream)
    checkpoint_every: int = PositiveInt  # steps
    monitor: str = Field(min_length=1)  # labelled split (train/ and test/ ImageFolders) for the kNN monitor
    monitor_per_class: int = PositiveInt
    knn_k: int = PositiveInt
    frames_root: str = Field(min_length=1)
    compile: bool
    precision: Literal["auto", "bf16", "fp32"]  # auto: bf16 autocast on CUDA and on CPUs with native bf16
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> PretrainParams:
        if self.batch_size % self.bn_splits:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of bn_splits {self.bn_splits}")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be fewer than steps {self.steps}")
        return self


class VariantParams(Section):
    method: Literal["moco", "supervised", "random", "external"]
    positives: Literal["images", "temporal", "tracker", "labels", "none"]
    data: str = Field(min_length=1)  # corpus, pairs manifest, or (external) the checkpoint file
    arch: Literal["resnet18", "resnet34", "resnet50"] | None = None  # None: pretrain.arch

    @model_validator(mode="after")
    def _check(self) -> VariantParams:
        allowed = {"moco": {"images", "temporal", "tracker"}, "supervised": {"labels"}, "random": {"none"},
                   "external": {"none"}}
        if self.positives not in allowed[self.method]:
            raise ValueError(f"positives {self.positives!r} does not go with method {self.method!r} "
                             f"(allowed: {sorted(allowed[self.method])})")
        return self


INVARIANCE_SETS = ("aloi_view", "aloi_ill", "aloi_col", "got10k_occlusion", "pascal3d_instance",
                   "pascal3d_instance_viewpoint")


class InvarianceParams(Section):
    sets: list[Literal[INVARIANCE_SETS]] = Field(min_length=1)  # which of the paper's sets to score
    aloi: str = Field(min_length=1)  # folder holding aloi_red2_{view,ill,col}/png2/
    got10k: str = Field(min_length=1)  # a GOT-10k split folder (list.txt, sequences)
    pascal3d: str = Field(min_length=1)  # a PASCAL3D+ release folder (Images, Annotations, Image_sets)
    aloi_size: int = Field(ge=16, le=1024)  # inputs are resized, without crop, to size x size
    got10k_size: int = Field(ge=16, le=1024)
    pascal3d_size: int = Field(ge=16, le=1024)
    got10k_seed: int = Field(ge=0)  # the frame per cover level (1992 in the public code)
    got10k_min_span: int = Field(ge=0, le=8)
    ks: list[StrictInt] = Field(min_length=1)  # top-K neurons
    batch_size: int = PositiveInt
    workers: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> InvarianceParams:
        if any(k <= 0 for k in self.ks):
            raise ValueError(f"ks {self.ks}: every K must be positive")
        return self


class LinearProbeParams(Section):
    epochs: int = PositiveInt
    lr: float = Field(gt=0)
    weight_decays: list[float] = Field(min_length=1)  # the grid; chosen by cross-validation on the training split
    folds: int = Field(ge=2)
    batch_size: int = PositiveInt

    @model_validator(mode="after")
    def _check(self) -> LinearProbeParams:
        if any(w < 0 for w in self.weight_decays):
            raise ValueError(f"weight_decays {self.weight_decays}: every value must be >= 0")
        return self


class KnnParams(Section):
    k: int = PositiveInt
    temperature: float = Field(gt=0)


class SvmParams(Section):
    costs: list[float] = Field(min_length=1)  # the C grid, chosen per class by cross-validation
    folds: int = Field(ge=2)


class ClassificationParams(Section):
    format: Literal["folder", "voc07"]  # folder: <data>/<split>/<class>/*; voc07: a VOC2007 folder
    data: str = Field(min_length=1)
    train_split: str = Field(min_length=1)
    test_split: str = Field(min_length=1)
    size: int = Field(ge=16, le=1024)  # resized without crop
    batch_size: int = PositiveInt
    workers: int = Field(ge=0)
    linear: LinearProbeParams
    knn: KnnParams
    svm: SvmParams
    seed: int = Field(ge=0)


class SegmentationParams(Section):
    format: Literal["world", "voc2012", "ade20k"]
    data: str = Field(min_length=1)
    train_split: str = Field(min_length=1)
    test_split: str = Field(min_length=1)
    size: int = Field(ge=16, le=1024)  # images and masks resized to size x size (masks: nearest)
    layers: list[Literal["layer1", "layer2", "layer3", "layer4"]] = Field(min_length=1)
    head: Literal["linear", "fcn"]
    epochs: int = PositiveInt
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    batch_size: int = PositiveInt
    workers: int = Field(ge=0)
    examples: int = Field(ge=0)  # scenes drawn in the PNG
    seed: int = Field(ge=0)


class ReportParams(Section):
    invariance_k: int = PositiveInt  # which top-K invariance score the tables and claims use
    resamples: int = Field(ge=100)  # paired-bootstrap draws per interval
    level: float = Field(gt=0.5, lt=1)  # confidence level of the intervals
    sweep: str = Field(min_length=1)  # CSV of more runs (run, kind, model, set, metric, value); header only: none


SECTIONS: dict[str, type[BaseModel] | type] = {
    "world": WorldParams,
    "data": DataParams,
    "frames": FramesParams,
    "pairs": PairsParams,
    "checks": ChecksParams,
    "pretrain": PretrainParams,
    "variants": dict,
    "invariance": InvarianceParams,
    "classification": ClassificationParams,
    "segmentation": SegmentationParams,
    "report": ReportParams,
}


def _describe(errors: list[dict[str, Any]], section: str) -> str:
    lines = []
    for err in errors:
        key = ".".join([section, *(str(p) for p in err["loc"])])
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            lines.append(f"  {key}: missing")
            continue
        if isinstance(value, dict):  # a check across several keys of this section
            lines.append(f"  {key}: {msg}")
        else:
            lines.append(f"  {key} = {value!r}: {msg}")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def validate(data: dict[str, Any], *sections: str, source: str = "params.yaml") -> dict[str, Any]:
    """Validate `sections` of a params mapping; unknown top-level keys are always rejected."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name in sections:
        if name not in SECTIONS:
            raise ConfigError(f"{source}: no schema for section {name!r}")
        if name not in data:
            raise ConfigError(f"{source}: missing section {name!r}")
        model = SECTIONS[name]
        value = data[name]
        if model is dict:  # name -> variant
            if not isinstance(value, dict) or not value:
                raise ConfigError(f"{source}: {name} must be a non-empty mapping of name -> settings")
            out[name] = {}
            for key, entry in value.items():
                try:
                    out[name][key] = VariantParams.model_validate(entry)
                except ValidationError as exc:
                    raise ConfigError(f"{source}: invalid parameters:\n{_describe(exc.errors(), f'{name}.{key}')}") from None
            continue
        if model is int:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{source}: {name} = {value!r}: expected a non-negative integer")
            out[name] = value
            continue
        try:
            out[name] = model.model_validate(value)
        except ValidationError as exc:
            raise ConfigError(
                f"{source}: invalid parameters:\n{_describe(exc.errors(), name)}"
            ) from None
    return out


def load(*sections: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml and return the validated `sections` by name."""
    return validate(read_yaml(path), *sections, source=str(path))
