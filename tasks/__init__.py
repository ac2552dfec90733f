"""Tasks: each module registers its entries with ``@registry.register("task", name)``."""

from tasks import clevr, pretrain_sets, seq_vqa, split_cifar100, split_digits, split_shapes

__all__ = ["clevr", "pretrain_sets", "seq_vqa", "split_cifar100", "split_digits", "split_shapes"]
