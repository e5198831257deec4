"""The methods a variant can name (`variants.NAME.method`), in one table: what each trains, on
which positives, and how the pretrain stage builds and steps it. Settings validation
(config.VariantParams), training (ssl/train.py, ssl/batch_augment.py) and the report read it here;
nothing else tests a method by name. No torch: config imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Method:
    description: str
    # the `positives` a variant of this method may name
    positives: tuple[str, ...]
    # whether the stage trains it; False: the backbone is exported as built or as read
    trains: bool
    # what is built: "moco" query and momentum key encoders with a queue of negatives, "classifier"
    # a backbone with a linear head, "init" the backbone as initialised, "file" the backbone of the
    # variant's `data` checkpoint
    model: Literal["moco", "classifier", "init", "file"]
    # one step's loss: "contrastive" InfoNCE of (query, key) views against the queue, "classify"
    # cross-entropy of one view against its label; None: no step
    step: Literal["contrastive", "classify"] | None = None
    # the batched augmentation: "mocov2" MoCo v2's, "crop_flip" random resized crop and flip only
    augment: Literal["mocov2", "crop_flip"] | None = None
    # BN statistics per group of the batch with the keys shuffled across groups (and processes),
    # which bn_splits counts; False: plain BN of each process's own batch
    split_bn: bool = False

    @property
    def queue(self) -> bool:
        """Whether it keeps a queue of negative keys (pretrain.queue_size)."""
        return self.model == "moco"


METHODS: dict[str, Method] = {
    "moco": Method(
        "MoCo v2: two augmented views of a positive pair, negatives from a queue",
        positives=("images", "temporal", "tracker", "crops"),
        trains=True,
        model="moco",
        step="contrastive",
        augment="mocov2",
        split_bn=True,
    ),
    "supervised": Method(
        "the supervised baseline: cross-entropy on the corpus's labels",
        positives=("labels",),
        trains=True,
        model="classifier",
        step="classify",
        augment="crop_flip",
    ),
    "random": Method("the untrained floor: the initialised backbone", ("none",), False, "init"),
    "external": Method("a given checkpoint (`data`), not trained here", ("none",), False, "file"),
}

# every positives kind, in the order the methods name them
POSITIVES = tuple(dict.fromkeys(p for m in METHODS.values() for p in m.positives))
