"""A timm ViT whose forward takes any subset of patch tokens with their own positions.

Core tokensets replay only the kept tokens of a stored sample: the patch
embedding is applied to those patches alone, each gets the positional
embedding of the place it came from, CLS is prepended, and nothing is inferred
for the dropped ones. timm's ``VisionTransformer`` holds the weights (so a
timm checkpoint of the same shape loads as is); only the embedding step is
ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from tasks.base import BackboneSpec

# Pixel statistics are fixed, not fitted, so stored uint8 tokens map to inputs the same way everywhere.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


@dataclass(frozen=True)
class TokenBatch:
    """Patch tokens of a batch as stored: uint8 [B, K, C·p·p] and their positions int64 [B, K]."""

    patches: torch.Tensor
    positions: torch.Tensor

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(self.patches.to(device), self.positions.to(device))

    def __len__(self) -> int:
        return int(self.patches.shape[0])


class TokenViT(nn.Module):
    """timm ViT (CLS pooling) with ``forward(TokenBatch) -> logits`` over kept tokens only."""

    def __init__(self, spec: BackboneSpec, num_classes: int) -> None:
        super().__init__()
        self.spec = spec
        self.vit = VisionTransformer(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            in_chans=spec.channels,
            num_classes=num_classes,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio,
            global_pool="token",
        )

    @property
    def head(self) -> nn.Linear:
        head = self.vit.head
        assert isinstance(head, nn.Linear)
        return head

    def embed(self, batch: TokenBatch) -> torch.Tensor:
        """[B, 1 + K, D]: CLS plus the kept patches, each with its own positional embedding."""
        proj = self.vit.patch_embed.proj
        pixels = (batch.patches.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD
        # The conv patch embedding is a linear map of each (C, p, p) patch.
        tokens = pixels @ proj.weight.flatten(1).t() + proj.bias
        pos = self.vit.pos_embed[0]  # [1 + P, D], row 0 is CLS
        tokens = tokens + pos[1 + batch.positions]
        cls = (self.vit.cls_token[0, 0] + pos[0]).expand(tokens.shape[0], 1, -1)
        return torch.cat([cls, tokens], dim=1)

    def features(self, batch: TokenBatch) -> torch.Tensor:
        """Penultimate features: CLS after the final norm, [B, D]."""
        x = self.vit.norm_pre(self.embed(batch))
        x = self.vit.blocks(x)
        return self.vit.norm(x)[:, 0]

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        return self.head(self.vit.fc_norm(self.features(batch)))

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """Every weight but the classifier head: what pretraining hands to the tasks."""
        return {k: v for k, v in self.vit.state_dict().items() if not k.startswith("head.")}

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.vit.load_state_dict(state, strict=False)
        stray = [k for k in missing if not k.startswith("head.")]
        if stray or unexpected:
            raise ValueError(f"backbone weights do not fit: missing {stray}, unexpected {unexpected}")


def full_positions(batch_size: int, tokens: int) -> torch.Tensor:
    return torch.arange(tokens).expand(batch_size, tokens)
