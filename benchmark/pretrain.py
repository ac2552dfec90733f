"""Pretrain a task's backbone on a disjoint procedural set; name the weights by the recipe's hash.

docs/design.md, "Why every model starts from a pretrained backbone": a ViT trained from
scratch in sequence loses plasticity after its first task, so every task's
model starts from weights this module makes (never from a hub). The file is
small, committed, and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from benchmark import registry
from benchmark.config import canonical_json
from benchmark.contracts import LATER_BACKBONE_FIELDS, BackboneSpec, TokenBatch, patchify
from benchmark.errors import UserError
from benchmark.results import write_bytes_atomic
from benchmark.train import drop_tokens, seeded_generator

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
PRETRAIN_SEED = 0
PRETRAIN_BATCH_SIZE = 64
CPU = torch.device("cpu")


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that determines the pretrained weights."""

    pretrain_set: str
    backbone: BackboneSpec
    per_class: int
    epochs: int
    lr: float
    batch_size: int = PRETRAIN_BATCH_SIZE
    seed: int = PRETRAIN_SEED
    token_dropout: float = (
        0.0  # random patch-token dropout while pretraining (a backbone used to partial inputs)
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.token_dropout < 1.0:
            raise ValueError(f"pretrain token_dropout must be in [0, 1), got {self.token_dropout}")

    @property
    def recipe_hash(self) -> str:
        """Hash of the recipe; ``token_dropout`` at 0 and the backbone's later fields at their older value
        (``LATER_BACKBONE_FIELDS``) are left out, so the older weights keep their names."""
        fields = asdict(self)
        if fields["token_dropout"] == 0.0:
            del fields["token_dropout"]
        for name, value in LATER_BACKBONE_FIELDS.items():
            if fields["backbone"][name] == value:
                del fields["backbone"][name]
        return hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:12]

    @property
    def file_name(self) -> str:
        return f"{self.pretrain_set}-{self.recipe_hash}.pt"


def default_recipe(backbone: BackboneSpec, token_dropout: float = 0.0) -> PretrainRecipe:
    entry = registry.create("pretrain_set", backbone.pretrain_set)
    return PretrainRecipe(
        pretrain_set=backbone.pretrain_set,
        backbone=backbone,
        per_class=entry.per_class,
        epochs=entry.epochs,
        lr=entry.lr,
        token_dropout=token_dropout,
    )


def weights_path(recipe: PretrainRecipe, weights_dir: Path = WEIGHTS_DIR) -> Path:
    return weights_dir / recipe.file_name


def load_backbone_weights(recipe: PretrainRecipe, weights_dir: Path = WEIGHTS_DIR) -> dict[str, torch.Tensor]:
    """The committed weights for this recipe; a missing or mismatched file is a one-line UserError."""
    path = weights_path(recipe, weights_dir)
    if not path.exists():
        raise UserError(
            f"pretrained backbone {path} not found (recipe {recipe.recipe_hash}): "
            "make it with `nox -s pretrain` or `python -m benchmark pretrain`"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("recipe_hash") != recipe.recipe_hash:
        raise UserError(f"pretrained backbone {path} was made by another recipe: rerun `nox -s pretrain`")
    return payload["state"]


def pretrain(
    recipe: PretrainRecipe,
    weights_dir: Path = WEIGHTS_DIR,
    show_progress: bool = True,
    device: torch.device = CPU,
) -> Path:
    """Train the backbone on the recipe's set and write ``weights/<set>-<hash>.pt`` atomically.

    On ``device`` (the committed weights were made on the CPU; a paper-scale backbone is made on a GPU,
    whose rounding gives other weights for the same recipe: the file records where it was made).
    """
    started = time.perf_counter()
    spec = recipe.backbone
    entry = registry.create("pretrain_set", recipe.pretrain_set)
    images, labels = entry.draw(recipe.per_class, spec.image_size, recipe.seed)
    if images.shape[1] != spec.channels:
        raise ValueError(
            f"{recipe.pretrain_set} draws {images.shape[1]} channels, backbone wants {spec.channels}"
        )
    patches = torch.from_numpy(patchify(images, spec.patch_size))
    targets = torch.from_numpy(labels)
    # The pretraining set names the objective whose model it trains (a ViT, or the text model).
    objective = registry.create("objective", getattr(entry, "objective", "classification"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = objective.pretrain_model(spec, int(labels.max()) + 1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05)
    steps = recipe.epochs * -(-len(targets) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps)
    generator = seeded_generator(recipe.seed, 7)
    positions = torch.arange(patches.shape[1]).expand(len(targets), -1)
    model.train()
    bar = tqdm(range(recipe.epochs), desc=f"pretrain {recipe.pretrain_set}", disable=not show_progress)
    correct = 0
    for _ in bar:
        order = torch.randperm(len(targets), generator=generator)
        correct = 0
        for start in range(0, len(order), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            batch = drop_tokens(TokenBatch(patches[index], positions[index]), recipe.token_dropout, generator)
            logits = model(batch.to(device))
            loss = F.cross_entropy(logits, targets[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((logits.argmax(1).cpu() == targets[index]).sum())
        bar.set_postfix(train_accuracy=f"{correct / len(targets):.3f}")
    path = weights_path(recipe, weights_dir)
    payload = {
        "recipe_hash": recipe.recipe_hash,
        "recipe": canonical_json(asdict(recipe)),
        "train_accuracy": correct / len(targets),
        "seconds": time.perf_counter() - started,
        "device": str(device),
        "state": {k: v.detach().cpu().clone() for k, v in model.backbone_state().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return path
