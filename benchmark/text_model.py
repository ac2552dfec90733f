"""A text transformer with the TokenViT interface: word tokens in place of patches.

A text task stores each sentence as its uint16 word ids, two bytes a word,
laid out as a 1×L "image" of two uint8 channels (low and high byte,
``benchmark.contracts.text_as_patches``) with patch size 1. Every part of the
engine that handles patch tokens — the memory and its byte count, replay of
kept tokens at their own positions, random input dropout, the mask token, the
attributions' attention hooks — then handles word tokens unchanged; only the
embedding step differs: a word table looked up at id = low + 256·high, in
place of the linear map of pixels. The blocks, CLS read-out, positional
embeddings and head are timm's ViT's, so this model *is* a ``TokenViT`` (the
attribution selectors read its attention exactly as a ViT's).

timm's ViT still builds a 2→D patch projection for this geometry; the text
model never calls it (a few hundred unused weights, kept so that the backbone
state has the ViT's usual keys).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.contracts import BackboneSpec, patches_as_ids
from benchmark.model import TokenViT


class TextViT(TokenViT):
    """``TokenViT`` over word tokens: ``forward(TokenBatch)`` where each patch is a word id's two bytes."""

    def __init__(self, spec: BackboneSpec, num_classes: int, mask_token: bool = False) -> None:
        if spec.vocabulary_size < 1 or spec.channels != 2 or spec.patch_size != 1 or spec.height != 1:
            raise ValueError(
                "a text backbone needs vocabulary_size > 0, 2 channels (an id's two bytes), "
                f"patch_size 1 and image_height 1, got {spec}"
            )
        super().__init__(spec, num_classes, mask_token=mask_token)
        self.word_table = nn.Embedding(spec.vocabulary_size, spec.embed_dim)
        nn.init.trunc_normal_(self.word_table.weight, std=0.02)

    def token_embeddings(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 word patches [B, K, 2] → word embeddings [B, K, D]."""
        ids = patches_as_ids(patches)
        if ids.numel() and int(ids.max()) >= self.spec.vocabulary_size:
            raise ValueError(f"word id {int(ids.max())} outside a vocabulary of {self.spec.vocabulary_size}")
        return self.word_table(ids)

    def dropped_token_embedding(self) -> torch.Tensor:
        """[D]: a dropped word under ``replay = "zero"`` is the padding word (id 0)."""
        return self.word_table.weight[0]

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The ViT's weights but its head, and the word table: what pretraining hands to the tasks."""
        state = super().backbone_state()
        state["word_table.weight"] = self.word_table.weight.detach()
        return state

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        rest = dict(state)
        table = rest.pop("word_table.weight", None)
        if table is None or table.shape != self.word_table.weight.shape:
            raise ValueError(
                f"backbone weights do not fit: word_table.weight is "
                f"{None if table is None else list(table.shape)}, the model's "
                f"{list(self.word_table.weight.shape)}"
            )
        super().load_backbone(rest)
        with torch.no_grad():
            self.word_table.weight.copy_(table)
