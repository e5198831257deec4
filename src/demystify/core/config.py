"""Typed schema of params.yaml.

Every stage loads its sections through :func:`load`, which rejects an unknown key, a wrong
type or an impossible value *before any work*, with a message naming the key and the value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)

from demystify.core.methods import METHODS, POSITIVES

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
            raise ValueError(
                f"width/height must be even for H.264 (got {self.width}x{self.height})"
            )
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
    classification_val_per_class: int = PositiveInt  # the kNN monitor's queries (pretrain.monitor)
    classification_test_per_class: int = PositiveInt
    segmentation_train: int = PositiveInt
    segmentation_test: int = PositiveInt

    @model_validator(mode="after")
    def _check(self) -> EvaluationWorld:
        if 360 % self.aloi_view_step_deg:
            raise ValueError(f"aloi_view_step_deg: {self.aloi_view_step_deg} does not divide 360")
        return self


# The world's instances of each category, by index within the category, fall into three disjoint
# blocks (world/synthesize.py): the first ones are the classification probes' training instances
# (`eval/classification/train`), the next CLASSIFICATION_VAL_SHARE the validation instances
# (`val`, the kNN monitor's queries), the last CLASSIFICATION_TEST_SHARE the test instances
# (`test`). Every pretraining source (object-centric corpus, scenes, scene crops, videos with
# their distractors) draws from train and val instances only, so no test instance is ever seen
# in training; evaluation-only sets (ALOI, GOT-10k occlusion, PASCAL3D+, segmentation) may use
# any. With 20 instances: train 0-10, val 11-14, test 15-19.
CLASSIFICATION_TEST_SHARE = 0.25
CLASSIFICATION_VAL_SHARE = 0.20


def instance_split(instances_per_category: int) -> dict[str, range]:
    """Indices within a category of the classification train, val and test instances (at least one
    each for val and test; train may come out empty, which WorldParams rejects)."""
    n = instances_per_category
    n_test = max(1, int(round(n * CLASSIFICATION_TEST_SHARE)))
    n_val = max(1, int(round(n * CLASSIFICATION_VAL_SHARE)))
    first_val, first_test = max(0, n - n_test - n_val), max(0, n - n_test)
    return {
        "train": range(0, first_val),
        "val": range(first_val, first_test),
        "test": range(first_test, n),
    }


class WorldParams(Section):
    seed: int = Field(ge=0)
    categories: int = Field(ge=2, le=10)
    instances_per_category: int = Field(
        ge=2
    )  # >= 3: disjoint train, val and test instances (below)
    image_size: int = Field(ge=16, le=1024)
    scene_size: int = Field(ge=16, le=2048)
    render_batch: int = PositiveInt
    videos: VideoWorld
    corpora: CorporaWorld
    evaluation: EvaluationWorld

    @model_validator(mode="after")
    def _check(self) -> WorldParams:
        split = self.instance_split()
        if not split["train"] or not split["val"] or not split["test"]:
            raise ValueError(
                f"instances_per_category: {self.instances_per_category} is too few for disjoint classification "
                "train, val and test instances (at least 3)"
            )
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
        pool = (
            self.categories * split["test"].start
        )  # what pretraining may draw from: train and val instances
        if self.corpora.objects_per_scene[1] > pool:
            raise ValueError(
                f"corpora.objects_per_scene: maximum {self.corpora.objects_per_scene[1]} > the {pool} instances "
                "pretraining may use (categories x the train and val instances of instances_per_category)"
            )
        object_centric = self.categories * self.corpora.object_centric_per_category
        if object_centric != self.corpora.scenes:
            raise ValueError(
                f"categories x corpora.object_centric_per_category = {self.categories} x "
                f"{self.corpora.object_centric_per_category} = {object_centric} != corpora.scenes {self.corpora.scenes}: "
                "claim 2 compares the object-centric corpus, the scenes and the scene crops (one per scene) on "
                "equal numbers of images"
            )
        return self

    def instance_split(self) -> dict[str, range]:
        """Indices within each category of the classification train, val and test instances."""
        return instance_split(self.instances_per_category)


class DataParams(Section):
    source: Literal["synthetic", "folder"]
    root: str = Field(
        min_length=1
    )  # annotated image corpora under <root>/corpora (check_data); the world's by default
    videos: str = Field(
        min_length=1
    )  # the training videos (extract_frames, mine_pairs, check_data)

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
    decode_timeout_s: float = Field(
        gt=0
    )  # one video's ffmpeg decode; longer: rejected as timed out
    # share of a video's frames byte-identical to the one before (ffmpeg filling a timestamp gap, a
    # frozen picture); more: rejected. The default holds for frames built without params.yaml.
    max_duplicate_share: float = Field(default=0.5, ge=0, le=1)
    # extract_frames runs once per shard (dvc.yaml foreach): 0..n-1, a list because DVC's foreach
    # takes one; a video's shard is frames_store.shard_of(id, n). The default: one shard
    shards: list[int] = Field(default=[0], min_length=1)

    @model_validator(mode="after")
    def _check_shards(self) -> FramesParams:
        if self.shards != list(range(len(self.shards))):
            raise ValueError(
                f"shards {self.shards} must be 0, 1, ..., n-1 in order (n = {len(self.shards)})"
            )
        return self


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
    snap_iou: float = Field(
        ge=0, le=1
    )  # a proposal in frame b must overlap the tracked box this much; 0: off
    max_scale_change: float = Field(ge=1)
    max_outside: float = Field(ge=0, le=1)  # share of the tracked box allowed outside the frame
    match_iou: float = Field(ge=0, le=1)  # proposal-to-ground-truth match for iou_gt
    grid_pairs: int = Field(ge=0)

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
    max_center_offset: float = Field(
        ge=0, le=1
    )  # main object's centre from the image centre / half-diagonal


class ChecksParams(Section):
    fail_on: list[Literal["frames_manifest", "pairs_manifest", "centricity", "leakage"]]
    object_centric: CentricityRange
    box_tolerance: float = Field(ge=0)  # pixels a box may exceed the frame by (rounding)


# the backbone's pooled feature width per architecture (ssl/moco.py FEATURE_DIMS, which imports
# torch): the invariance score's top-K units are K of these
FEATURE_WIDTH = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def memory_bytes() -> int:
    """This machine's physical memory (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


class PretrainParams(Section):
    arch: Literal["resnet18", "resnet34", "resnet50"]
    width: float = Field(
        gt=0, le=4
    )  # every layer's channels x this (0.5: 32-64-128-256 for resnet18)
    image_size: int = Field(ge=16, le=1024)
    steps: int = PositiveInt  # optimizer steps, the same for every trained variant (equal budgets)
    warmup_steps: int = Field(ge=0)  # linear warm-up of the learning rate, then cosine to 0
    log_every: int = (
        PositiveInt  # loss, lr and the kNN monitor every this many steps (and at the last)
    )
    batch_size: int = PositiveInt  # the global batch, shared by torchrun's processes
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
    monitor: str = Field(
        min_length=1
    )  # labelled set (train/ and val/ ImageFolders: bank and queries) for the kNN monitor
    monitor_per_class: int = PositiveInt
    knn_k: int = PositiveInt
    frames_root: str = Field(min_length=1)
    compile: bool
    precision: Literal[
        "auto", "bf16", "fp32"
    ]  # auto: bf16 autocast on CUDA and on CPUs with native bf16
    seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> PretrainParams:
        if not float(64 * self.width).is_integer():
            raise ValueError(
                f"width {self.width}: 64 x width must be a whole number of channels (e.g. 0.25, 0.5, 0.75)"
            )
        if self.batch_size % self.bn_splits:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of bn_splits {self.bn_splits}"
            )
        if (
            self.batch_size // self.bn_splits < 2
        ):  # BatchNorm of one sample: no statistics (or a traceback)
            raise ValueError(
                f"batch_size {self.batch_size} / bn_splits {self.bn_splits} leaves "
                f"{self.batch_size // self.bn_splits} sample per BN group; each needs at least 2"
            )
        # what the queue and the head's last layer alone hold before any image is read: the queue
        # (cloned each step) and the layer's weights in the query encoder (with gradient and SGD
        # momentum) and the key encoder, float32
        need = (
            4 * self.dim * (2 * self.queue_size + 4 * (FEATURE_WIDTH[self.arch] * self.width + 1))
        )
        ram = memory_bytes()
        if ram and need > ram:
            raise ValueError(
                f"dim {self.dim} x queue_size {self.queue_size}: the queue and projection head "
                f"alone need {need / 2**30:.1f} GiB, more than this machine's {ram / 2**30:.1f} GiB"
            )
        if self.warmup_steps >= self.steps:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} must be fewer than steps {self.steps}"
            )
        return self


class VariantParams(Section):
    method: Literal[tuple(METHODS)]  # methods.py: what each trains, and how
    # crops: both views from the tracked box of a pair's first frame (tracker without the time step)
    positives: Literal[POSITIVES]
    data: str = Field(min_length=1)  # corpus, pairs manifest, or (external) the checkpoint file
    arch: Literal["resnet18", "resnet34", "resnet50"] | None = None  # None: pretrain.arch
    seed: int | None = Field(default=None, ge=0)  # None: pretrain.seed
    replicate_of: str | None = (
        None  # the variant this one repeats with another seed (a label; checked in validate)
    )

    @model_validator(mode="after")
    def _check(self) -> VariantParams:
        allowed = METHODS[self.method].positives
        if self.positives not in allowed:
            raise ValueError(
                f"positives {self.positives!r} does not go with method {self.method!r} "
                f"(allowed: {sorted(allowed)})"
            )
        return self


INVARIANCE_SETS = (
    "aloi_view",
    "aloi_ill",
    "aloi_col",
    "got10k_occlusion",
    "pascal3d_instance",
    "pascal3d_instance_viewpoint",
)


class InvarianceParams(Section):
    sets: list[Literal[INVARIANCE_SETS]] = Field(min_length=1)  # which of the paper's sets to score
    aloi: str = Field(min_length=1)  # folder holding aloi_red2_{view,ill,col}/png2/
    got10k: str = Field(min_length=1)  # a GOT-10k split folder (list.txt, sequences)
    pascal3d: str = Field(
        min_length=1
    )  # a PASCAL3D+ release folder (Images, Annotations, Image_sets)
    aloi_size: int = Field(ge=16, le=1024)  # inputs are resized, without crop, to size x size
    got10k_size: int = Field(ge=16, le=1024)
    pascal3d_size: int = Field(ge=16, le=1024)
    got10k_seed: int = Field(ge=0)  # the frame per cover level (1992 in the public code)
    got10k_min_span: int = Field(ge=0, le=8)
    ks: list[StrictInt] = Field(min_length=1)  # top-K neurons
    batch_size: int = PositiveInt

    @model_validator(mode="after")
    def _check(self) -> InvarianceParams:
        if any(k <= 0 for k in self.ks):
            raise ValueError(f"ks {self.ks}: every K must be positive")
        return self


class LinearProbeParams(Section):
    epochs: int = PositiveInt
    lr: float = Field(gt=0)
    weight_decays: list[float] = Field(
        min_length=1
    )  # the grid; chosen by cross-validation on the training split
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
    examples: int = Field(ge=0)  # scenes drawn in the PNG
    seed: int = Field(ge=0)


class ReportParams(Section):
    invariance_k: int = PositiveInt  # which top-K invariance score the tables and claims use
    resamples: int = Field(ge=100)  # paired-bootstrap draws per interval
    level: float = Field(gt=0.5, lt=1)  # confidence level of the intervals
    sweep: str = Field(
        min_length=1
    )  # CSV of more runs (run, kind, model, set, metric, value); header only: none
    gate_margin: float = Field(
        ge=0, le=1
    )  # linear and kNN top-1 at least this far above the untrained network
    record_gap_share: float = Field(
        ge=0, le=1
    )  # kNN gap to supervised a variant must close for verdicts of record
    record_seeds: int = Field(ge=1)  # pretraining seeds a variant needs for verdicts of record
    ceiling: float = Field(
        gt=0
    )  # an invariance set on which the untrained network scores this much is at ceiling


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


# a variant's name becomes a stage name (pretrain@NAME), a folder (models/NAME) and a params key
# (variants.NAME): nothing that a shell, a path or DVC's key syntax would read otherwise
VARIANT_NAME = re.compile(r"[A-Za-z0-9_]+")


def _check_variant_name(key: Any, section: str, source: str) -> None:
    if not isinstance(key, str) or not VARIANT_NAME.fullmatch(key):
        raise ConfigError(
            f"{source}: {section}.{key}: a variant name may hold only letters, digits and "
            f"underscores (got {key!r})"
        )


# every params value that dvc.yaml interpolates into a stage's cmd (tests/test_params_faults.py keeps
# this in step with dvc.yaml). Each sits in single quotes there, so `$(...)`, backticks, `"` and
# spaces pass to the script literally; only a single quote, which would end the quoting, is refused.
CMD_KEYS = (
    "data.root",
    "data.videos",
    "pretrain.monitor",
    "variants.*.data",
    "invariance.aloi",
    "invariance.got10k",
    "invariance.pascal3d",
    "classification.data",
    "segmentation.data",
    "report.sweep",
)


def _cmd_values(data: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for key in CMD_KEYS:
        section, *rest = key.split(".")
        nodes = [(section, data.get(section))]
        for part in rest:
            nodes = [
                (f"{name}.{k}", v)
                for name, node in nodes
                if isinstance(node, dict)
                for k, v in node.items()
                if part in ("*", k)
            ]
        out += nodes
    return out


def check_shell_safe(data: dict[str, Any], source: str = "params.yaml") -> None:
    """Variant names and every value a stage's cmd interpolates: what the shell running the cmd must
    never read as code. Run where params are composed (before any command) and by every stage."""
    variants = data.get("variants")
    for key in variants if isinstance(variants, dict) else ():
        _check_variant_name(key, "variants", source)
    for key, value in _cmd_values(data):
        if isinstance(value, str) and "'" in value:
            raise ConfigError(
                f"{source}: {key} = {value!r}: a single quote would end the quoting of the stage "
                "command in dvc.yaml (rename the path)"
            )


def _check_ks(data: dict[str, Any], ks: list[int], source: str) -> None:
    """K is a number of the representation's units: more than the backbone's width cannot be scored."""
    pretrain = data.get("pretrain")
    archs = {"pretrain.arch": pretrain.get("arch") if isinstance(pretrain, dict) else None}
    scale = pretrain.get("width", 1.0) if isinstance(pretrain, dict) else 1.0
    scale = scale if isinstance(scale, (int, float)) and scale > 0 else 1.0
    variants = data.get("variants")
    for name, v in variants.items() if isinstance(variants, dict) else ():
        if isinstance(v, dict) and v.get("arch") is not None:
            archs[f"variants.{name}.arch"] = v["arch"]
    for key, arch in archs.items():
        width = int(FEATURE_WIDTH[arch] * scale) if arch in FEATURE_WIDTH else None
        too_big = [k for k in ks if width and k > width]
        if too_big:
            raise ConfigError(
                f"{source}: invariance.ks = {ks}: K {', '.join(map(str, too_big))} > the {width} "
                f"feature units of {arch} at pretrain.width {scale} ({key}); the top-K units need K <= {width}"
            )


def _check_replicates(
    variants: dict[str, VariantParams], pretrain_seed: Any, section: str, source: str
) -> None:
    """A replicate repeats an original variant with another seed and nothing else: the same method,
    positives and data, a seed none of its group has. It names the original, never another replicate,
    so a group is one original and its replicates."""

    def seed_of(v: VariantParams) -> Any:
        return pretrain_seed if v.seed is None else v.seed

    seen: dict[str, dict[Any, str]] = {}  # original -> effective seed -> the variant that has it
    for key, v in variants.items():
        if v.replicate_of is None:
            continue
        where = f"{source}: {section}.{key}.replicate_of = {v.replicate_of!r}"
        original = variants.get(v.replicate_of)
        if original is None or v.replicate_of == key:
            raise ConfigError(f"{where}: names no other variant (variants: {', '.join(variants)})")
        if original.replicate_of is not None:
            raise ConfigError(
                f"{where}: is itself a replicate; name its original {original.replicate_of!r}"
            )
        differs = [
            f
            for f in ("method", "positives", "data", "arch")
            if getattr(v, f) != getattr(original, f)
        ]
        if differs:
            raise ConfigError(
                f"{where}: a replicate differs from its original in the seed alone, but "
                f"{', '.join(f'{f} {getattr(v, f)!r} != {getattr(original, f)!r}' for f in differs)}"
            )
        group = seen.setdefault(v.replicate_of, {seed_of(original): v.replicate_of})
        if seed_of(v) in group:
            raise ConfigError(
                f"{where}: its seed {seed_of(v)!r} is the seed of {group[seed_of(v)]!r} "
                f"(set variants.{key}.seed to another)"
            )
        group[seed_of(v)] = key


def parse_yaml(text: str) -> Any:
    """YAML 1.2, as DVC reads params.yaml (dvc/utils/serialize/_yaml.py: ruamel's safe loader): `1e-3` is a float and yes/no/on/off are strings, where PyYAML's YAML 1.1 reads a
    string and a bool. Raises ruamel's YAMLError (duplicate keys included)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


def read_yaml(path: str | Path) -> dict[str, Any]:
    from ruamel.yaml import YAMLError

    path = Path(path)
    try:
        data = parse_yaml(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _unknown_keys(value: Any, model: type, prefix: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every key under `value` that `model` (a Section, or dict: the
    variants' name -> VariantParams) has no field for; values of the wrong type are left to the
    section's own validation."""
    if not isinstance(value, dict):
        return []
    if model is dict:
        return [
            u
            for name, entry in value.items()
            for u in _unknown_keys(entry, VariantParams, f"{prefix}.{name}")
        ]
    out = []
    for key, sub in value.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            out.append((f"{prefix}.{key}", sub))
        elif isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            out += _unknown_keys(sub, field.annotation, f"{prefix}.{key}")
    return out


# settings that change speed, never results: in machine.yaml (demystify.machine), which no stage lists,
# so tuning them reruns nothing; an old params.yaml naming one is told where it went
MOVED_TO_MACHINE = (
    "frames.workers",
    "pairs.workers",
    "pretrain.workers",
    "pretrain.resident_mb",
    "pretrain.checkpoint_every",
    "invariance.workers",
    "classification.workers",
    "segmentation.workers",
)


def _unknown_line(key: str, value: Any) -> str:
    if key in MOVED_TO_MACHINE:
        return (
            f"  {key} = {value!r}: {key} moved to machine.yaml (changes speed, never results: no stage "
            "lists it, so changing it reruns nothing); set it there"
        )
    return f"  {key} = {value!r}: unknown key (not in the schema; no stage reads it)"


def check_keys(data: dict[str, Any], source: str = "params.yaml") -> None:
    """Every key of the whole params tree is in the schema, whichever sections a stage reads: a key
    added with Hydra's `+` (`dvc exp run -S +seed=1`) that no stage reads would otherwise be
    recorded as an experiment's param while changing nothing."""
    unknown = sorted(str(k) for k in set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s): {', '.join(unknown)} (not in the schema, "
            "src/demystify/core/config.py; no stage reads it)"
        )
    nested = [
        u for name, model in SECTIONS.items() for u in _unknown_keys(data.get(name), model, name)
    ]
    if nested:
        lines = "\n".join(_unknown_line(key, value) for key, value in nested)
        raise ConfigError(f"{source}: invalid parameters:\n{lines}")


def validate(data: dict[str, Any], *sections: str, source: str = "params.yaml") -> dict[str, Any]:
    """Validate `sections` of a params mapping; an unknown key anywhere in it (not only in
    `sections`) and a value the shell would read as code are always rejected."""
    check_keys(data, source)
    check_shell_safe(data, source)
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
                raise ConfigError(
                    f"{source}: {name} must be a non-empty mapping of name -> settings"
                )
            out[name] = {}
            for key, entry in value.items():
                _check_variant_name(key, name, source)
                try:
                    out[name][key] = VariantParams.model_validate(entry)
                except ValidationError as exc:
                    raise ConfigError(
                        f"{source}: invalid parameters:\n{_describe(exc.errors(), f'{name}.{key}')}"
                    ) from None
            _check_replicates(out[name], (data.get("pretrain") or {}).get("seed"), name, source)
            continue
        try:
            out[name] = model.model_validate(value)
        except ValidationError as exc:
            raise ConfigError(
                f"{source}: invalid parameters:\n{_describe(exc.errors(), name)}"
            ) from None
    if "invariance" in out:
        _check_ks(data, out["invariance"].ks, source)
    return out


def load(*sections: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml and return the validated `sections` by name."""
    return validate(read_yaml(path), *sections, source=str(path))


if (
    __name__ == "__main__"
):  # `python -m demystify.core.config [params.yaml]`: the whole file's keys and cmd values
    import sys

    try:
        validate(read_yaml(sys.argv[1] if len(sys.argv) > 1 else "params.yaml"))
    except ConfigError as exc:
        print(f"params: {exc}", file=sys.stderr)
        sys.exit(1)
