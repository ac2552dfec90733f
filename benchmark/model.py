"""A timm ViT whose forward takes any subset of patch tokens with their own positions.

Core tokensets replay only the kept tokens of a stored sample: the patch
embedding is applied to those patches alone, each gets the positional
embedding of the place it came from, CLS is prepended, and nothing is inferred
for the dropped ones. timm's ``VisionTransformer`` holds the weights (so a
timm checkpoint of the same shape loads as is); only the embedding step is
ours.

A batch may carry a text input (VQA questions): its word embeddings, with
their own positional embeddings, join the patch tokens in one sequence, so
every block fuses image and question (BLIP's fusion in spirit). Token
selection ranks patches only; the text is always kept whole.

Every model the cell runner trains answers the same few questions (``loss``,
``per_sample_loss``, ``target_score``, ``features_and_grad_proxy``,
``encoder``), so trainer, selectors and attributions work for classification,
VQA and captioning alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from benchmark.contracts import BackboneSpec, TokenBatch, full_positions

# Pixel statistics are fixed, not fitted, so stored uint8 tokens map to inputs the same way everywhere.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


class TokenViT(nn.Module):
    """timm ViT (CLS pooling) with ``forward(TokenBatch) -> logits`` over kept tokens (and text) only."""

    def __init__(
        self,
        spec: BackboneSpec,
        num_classes: int,
        vocabulary_size: int = 0,
        text_length: int = 0,
        mask_token: bool = False,
    ) -> None:
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
        # Created after the ViT, so that a model without text draws the same initial weights as before.
        self.word_embed: nn.Embedding | None = None
        self.text_pos: nn.Parameter | None = None
        if vocabulary_size:
            self.word_embed = nn.Embedding(vocabulary_size, spec.embed_dim)
            self.text_pos = nn.Parameter(torch.zeros(1, text_length, spec.embed_dim))
            nn.init.trunc_normal_(self.text_pos, std=0.02)
            nn.init.trunc_normal_(self.word_embed.weight, std=0.02)
        # replay = "mask": a dropped position is fed as this learned token (plus its position).
        self.mask_token: nn.Parameter | None = None
        if mask_token:
            self.mask_token = nn.Parameter(torch.zeros(spec.embed_dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def encoder(self) -> TokenViT:
        """The ViT whose attention maps the attributions read (this model itself)."""
        return self

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
        if batch.masked is not None:
            # A dropped position: the learned mask token (replay = "mask"), or else a zero patch of the
            # normalised image (replay = "zero", as the seed paper's code), whose embedding is the bias.
            fill = proj.bias if self.mask_token is None else self.mask_token
            tokens = torch.where(batch.masked.unsqueeze(-1), fill.to(tokens.dtype), tokens)
        if batch.scale is not None:
            tokens = tokens * batch.scale.unsqueeze(-1).to(tokens.dtype)
        pos = self.vit.pos_embed[0]  # [1 + P, D], row 0 is CLS
        tokens = tokens + pos[1 + batch.positions]
        cls = (self.vit.cls_token[0, 0] + pos[0]).expand(tokens.shape[0], 1, -1)
        if batch.text is None:
            return torch.cat([cls, tokens], dim=1)
        if self.word_embed is None or self.text_pos is None:
            raise ValueError("this model takes no text input (built without a vocabulary)")
        words = self.word_embed(batch.text) + self.text_pos[:, : batch.text.shape[1]]
        return torch.cat([cls, tokens, words], dim=1)

    def features(self, batch: TokenBatch) -> torch.Tensor:
        """Penultimate features: CLS after the final norm, [B, D]."""
        x = self.vit.norm_pre(self.embed(batch))
        x = self.vit.blocks(x)
        return self.vit.norm(x)[:, 0]

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        return self.head(self.vit.fc_norm(self.features(batch)))

    def loss(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the batch: what training minimises."""
        return F.cross_entropy(self(batch), targets)

    def per_sample_loss(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per sample [B] (AtMan's relevance is its change)."""
        return F.cross_entropy(self(batch).float(), targets, reduction="none")

    def target_score(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
        """The target logit per sample [B]: what gradient attributions differentiate."""
        return self(batch).gather(1, targets.view(-1, 1)).squeeze(1)

    def predict(self, batch: TokenBatch) -> torch.Tensor:
        return self(batch).argmax(dim=1)

    def features_and_grad_proxy(
        self, batch: TokenBatch, targets: torch.Tensor, with_grads: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Penultimate features [B, D] and the closed-form last-layer gradient [B, C·(1 + D)].

        For cross-entropy on z = W h + b: ∂ℓ/∂z = p − e_y and ∂ℓ/∂W = (p − e_y) hᵀ;
        the proxy concatenates both, as CORDS does.
        """
        hidden = self.features(batch)
        if not with_grads:
            return hidden, None
        probabilities = F.softmax(self.head(self.vit.fc_norm(hidden)), dim=1)
        error = probabilities - F.one_hot(targets, probabilities.shape[1])
        outer = (error.unsqueeze(2) * hidden.unsqueeze(1)).flatten(1)
        return hidden, torch.cat([error, outer], dim=1)

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """Every weight but the classifier head: what pretraining hands to the tasks."""
        return {k: v for k, v in self.vit.state_dict().items() if not k.startswith("head.")}

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.vit.load_state_dict(state, strict=False)
        stray = [k for k in missing if not k.startswith("head.")]
        if stray or unexpected:
            raise ValueError(f"backbone weights do not fit: missing {stray}, unexpected {unexpected}")


def fill_masked(batch: TokenBatch, tokens: int) -> TokenBatch:
    """A partial batch as a whole one: every position present, the missing ones marked ``masked``
    (their pixels zero, never read). ``replay = "mask"`` and ``"zero"`` feed this; ``"drop"`` feeds
    ``batch``."""
    size, kept = batch.positions.shape
    if kept == tokens and batch.masked is None:
        return batch
    if batch.scale is not None:
        raise ValueError("a batch with channel-dropout scales already holds every position")
    patches = batch.patches.new_zeros(size, tokens, batch.patches.shape[2])
    patches.scatter_(1, batch.positions.unsqueeze(-1).expand(-1, -1, patches.shape[2]), batch.patches)
    masked = torch.ones(size, tokens, dtype=torch.bool, device=batch.positions.device)
    masked.scatter_(1, batch.positions, False)
    positions = full_positions(size, tokens).to(batch.positions.device)
    return TokenBatch(patches, positions, batch.text, masked)
