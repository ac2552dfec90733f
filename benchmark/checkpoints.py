"""Load a local timm ViT checkpoint (e.g. ViT-B/16 saved with ``torch.save(model.state_dict())``).

For the seed paper's protocol (``grids/paper.toml``): the backbone starts from a
weights file the user already has, given by path; nothing is downloaded. The
classifier head is dropped (each task stream has its own), and positional
embeddings are resampled when the checkpoint's grid differs from the model's.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed

from benchmark.errors import UserError

NESTED_KEYS = ("state_dict", "model", "module")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from a ``{"state_dict": ...}``-style payload."""
    if not path.is_file():
        raise UserError(f"backbone weights {path} not found ([train] backbone_weights)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise UserError(f"cannot read backbone weights {path}: {str(error).splitlines()[0]}") from None
    for key in NESTED_KEYS:
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UserError(f"backbone weights {path} hold no state dict of tensors")
    return payload


def check_fits(state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path) -> None:
    """A one-line UserError when the checkpoint's tensors do not have the model's shapes."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("head.")}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise UserError(
            f"backbone weights {path} lack {len(missing)} tensors of the model, e.g. {missing[0]}"
        )
    for key, shape in expected.items():
        if key != "pos_embed" and state[key].shape != shape:
            raise UserError(
                f"backbone weights {path} do not fit the task's backbone: {key} is "
                f"{list(state[key].shape)}, the model needs {list(shape)}"
            )


def fit_to_model(state: dict[str, torch.Tensor], pos_embed_shape: torch.Size) -> dict[str, torch.Tensor]:
    """Drop the head; resample ``pos_embed`` [1, 1 + P, D] to the model's token grid if needed."""
    fitted = {k: v for k, v in state.items() if not k.startswith("head.")}
    pos = fitted.get("pos_embed")
    if pos is not None and pos.shape != pos_embed_shape:
        old_side, new_side = math.isqrt(pos.shape[1] - 1), math.isqrt(pos_embed_shape[1] - 1)
        fitted["pos_embed"] = resample_abs_pos_embed(pos, [new_side, new_side], [old_side, old_side], 1)
    return fitted
