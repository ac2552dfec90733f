"""Tasks: each module registers its entries with ``@registry.register("task", name)``."""

from tasks import pretrain_sets, seq_captions, split_cifar100, split_digits, split_shapes

__all__ = ["pretrain_sets", "seq_captions", "split_cifar100", "split_digits", "split_shapes"]
