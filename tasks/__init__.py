"""Tasks: each module registers its entries with ``@registry.register("task", name)``."""

from tasks import (
    clevr,
    coco_captions,
    pretrain_sets,
    seq_captions,
    seq_vqa,
    split_cifar100,
    split_digits,
    split_distractors,
    split_shapes,
    split_text,
)

__all__ = [
    "clevr",
    "coco_captions",
    "pretrain_sets",
    "seq_captions",
    "seq_vqa",
    "split_cifar100",
    "split_digits",
    "split_distractors",
    "split_shapes",
    "split_text",
]
