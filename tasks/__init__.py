"""Tasks: each module registers its entries with ``@registry.register("task", name)``."""

from tasks import coco_captions, pretrain_sets, seq_captions, split_cifar100, split_digits, split_shapes

__all__ = ["coco_captions", "pretrain_sets", "seq_captions", "split_cifar100", "split_digits", "split_shapes"]
