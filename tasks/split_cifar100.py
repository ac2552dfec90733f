"""split-cifar100: a user's local CIFAR-100 (the python archive), 10 tasks of 10 classes.

The archive's ``train`` and ``test`` files are pickles. They are read with an
unpickler that admits only the few numpy constructors those files use, so a
tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmark import registry
from benchmark.contracts import BackboneSpec, TaskStream
from benchmark.errors import UserError
from tasks.base import class_incremental

ENV_VAR = "CIFAR100_ROOT"
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def read_cifar_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, 32, 32] and fine labels [n] from one archive file."""
    try:
        with path.open("rb") as stream:
            payload = _ArraysOnlyUnpickler(stream, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise UserError(f"cannot read CIFAR-100 file {path}: {error}") from None
    try:
        data = np.asarray(payload[b"data"], dtype=np.uint8)
        labels = np.asarray(payload[b"fine_labels"], dtype=np.int64)
    except (KeyError, TypeError) as error:
        raise UserError(f"{path} is not a CIFAR-100 python archive file (missing {error})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise UserError(f"{path}: unexpected CIFAR-100 shapes {data.shape} / {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def resize(images: np.ndarray, size: int, chunk: int = 512) -> np.ndarray:
    """uint8 [n, 3, 32, 32] → uint8 [n, 3, size, size] (bicubic, as a ViT at 224 px expects)."""
    if images.shape[-1] == size:
        return images
    out = np.empty((len(images), 3, size, size), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        batch = torch.from_numpy(images[start : start + chunk]).float()
        scaled = F.interpolate(batch, size=(size, size), mode="bicubic", align_corners=False)
        out[start : start + chunk] = scaled.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


@registry.register("task", "split-cifar100")
class SplitCifar100:
    """CIFAR-100 from a local copy (python archive; path or $CIFAR100_ROOT), 10 tasks of 10 classes."""

    def __init__(
        self,
        *,
        root: str = "",
        classes_per_task: int = 10,
        patch_size: int = 8,
        train_per_class: int = 0,
        class_order_seed: int = 0,
        epochs: int = 3,
        image_size: int = 32,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
    ) -> None:
        if 100 % classes_per_task:
            raise ValueError(f"classes_per_task must divide 100, got {classes_per_task}")
        if image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size {image_size}, got {patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads must divide embed_dim {embed_dim}, got {num_heads}")
        self.root = root
        self.classes_per_task = classes_per_task
        self.patch_size = patch_size
        self.train_per_class = train_per_class  # 0: all 500
        self.class_order_seed = class_order_seed
        self.epochs = epochs
        self.image_size = image_size
        self.backbone = BackboneSpec(
            image_size=image_size,
            channels=3,
            patch_size=patch_size,
            pretrain_set="shapes-15",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
        )

    def archive_dir(self) -> Path:
        root = self.root or os.environ.get(ENV_VAR, "")
        if not root:
            raise UserError(
                f"split-cifar100 needs a local CIFAR-100: set [task_params.split-cifar100] root or ${ENV_VAR}"
            )
        path = Path(root).expanduser()
        for candidate in (path, path / "cifar-100-python"):
            if (candidate / "train").is_file() and (candidate / "test").is_file():
                return candidate
        raise UserError(f"no CIFAR-100 python archive (train, test files) at {path}")

    def build(self) -> TaskStream:
        folder = self.archive_dir()
        train_images, train_labels = read_cifar_split(folder / "train")
        test_images, test_labels = read_cifar_split(folder / "test")
        if self.train_per_class:
            keep = np.concatenate(
                [np.flatnonzero(train_labels == c)[: self.train_per_class] for c in np.unique(train_labels)]
            )
            keep.sort()
            train_images, train_labels = train_images[keep], train_labels[keep]
        images = resize(np.concatenate([train_images, test_images]), self.image_size)
        labels = np.concatenate([train_labels, test_labels])
        train_index = np.arange(len(train_labels))
        test_index = np.arange(len(train_labels), len(labels))
        classes = sorted(int(c) for c in np.unique(labels))
        order = [classes[i] for i in np.random.default_rng(self.class_order_seed).permutation(len(classes))]
        if len(order) % self.classes_per_task:
            raise UserError(f"{len(order)} CIFAR classes do not split into tasks of {self.classes_per_task}")
        experiences = class_incremental(images, labels, train_index, test_index, order, self.classes_per_task)
        stream = TaskStream(
            "split-cifar100", experiences, 100, self.backbone, has_masks=False, epochs=self.epochs
        )
        return stream
