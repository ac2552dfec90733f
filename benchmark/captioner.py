"""An encoder–decoder captioner whose encoder is the suite's ``TokenViT``.

The encoder takes a ``TokenBatch`` of any kept tokens with their own
positions (so a replayed core tokenset is encoded from its kept patches only),
loads the pretrained backbone like every classification task, and keeps the
timm blocks at ``.encoder.vit.blocks`` where the attention hooks find them. A
small transformer decoder (causal self-attention, cross-attention to every
encoder token state) writes the caption; teacher forcing trains it.

Target rows are ``benchmark.contracts`` text ids: bos, words, eos, then 0 (padding).

It answers what the trainer, the selectors and the attributions ask of every
model (``benchmark.train.ContinualModel``): ``loss`` (mean caption
cross-entropy), ``per_sample_loss``, ``target_score`` (the caption's mean
log-likelihood per target token), ``features_and_grad_proxy`` (encoder CLS,
output-layer gradient proxy) and ``encoder``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.contracts import BOS_ID, EOS_ID, PAD_ID, BackboneSpec, TokenBatch, decode_ids
from benchmark.model import TokenViT

# Above this many dimensions the last-layer gradient proxy is randomly projected (see output_grad_proxy).
GRAD_PROXY_MAX_DIMS = 8192


class CaptionModel(nn.Module):
    """TokenViT encoder + ``nn.TransformerDecoder`` (pre-norm, causal) + ``nn.Linear(D, vocab)``."""

    def __init__(
        self,
        spec: BackboneSpec,
        vocab_size: int,
        max_length: int,
        decoder_layers: int = 2,
        decoder_heads: int | None = None,
        mask_token: bool = False,
    ) -> None:
        super().__init__()
        if vocab_size < 4:
            raise ValueError(f"vocab_size must cover pad, bos, eos and a word, got {vocab_size}")
        width = spec.embed_dim
        self.max_length = max_length
        # No classifier head: the decoder reads every token state. mask_token: for replay = "mask".
        self.encoder = TokenViT(spec, num_classes=0, mask_token=mask_token)
        self.word_embedding = nn.Embedding(vocab_size, width, padding_idx=PAD_ID)
        self.position_embedding = nn.Parameter(torch.zeros(max_length, width))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        # Dropout 0: dropout would draw from torch's global generator, which no cell seeds.
        layer = nn.TransformerDecoderLayer(
            d_model=width,
            nhead=decoder_heads or spec.num_heads,
            dim_feedforward=int(width * spec.mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, decoder_layers, norm=nn.LayerNorm(width))
        self.output = nn.Linear(width, vocab_size)

    @property
    def vocab_size(self) -> int:
        return self.output.out_features

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Pretrained encoder weights (``benchmark.pretrain.load_backbone_weights``)."""
        self.encoder.load_backbone(state)

    def encode(self, batch: TokenBatch) -> torch.Tensor:
        """Encoder token states [B, 1 + K, D]: CLS and the kept patches, after the final norm."""
        vit = self.encoder.vit
        return vit.norm(vit.blocks(vit.norm_pre(self.encoder.embed(batch))))

    def features(self, batch: TokenBatch) -> torch.Tensor:
        """The encoder's CLS after its final norm, [B, D]: the embedding herding and k-center use."""
        return self.encoder.features(batch)

    def decode_states(self, memory: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Decoder hidden states [B, T, D] for input ids [B, T] (causal: position t sees inputs ≤ t)."""
        length = inputs.shape[1]
        if length > self.max_length:
            raise ValueError(f"a caption of {length} tokens is longer than max_length {self.max_length}")
        words = self.word_embedding(inputs) + self.position_embedding[:length]
        causal = nn.Transformer.generate_square_subsequent_mask(
            length, device=inputs.device, dtype=words.dtype
        )
        return self.decoder(words, memory, tgt_mask=causal, tgt_is_causal=True)

    def forward(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L − 1, V]: position t predicts target token t + 1."""
        return self.output(self.decode_states(self.encode(batch), targets[:, :-1]))

    def per_sample_loss(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy [B], averaged over each caption's non-pad target tokens (eos included)."""
        logits = self(batch, targets)
        labels = targets[:, 1:]
        token_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=PAD_ID, reduction="none")
        counts = (labels != PAD_ID).sum(dim=1).clamp(min=1)
        return token_loss.sum(dim=1) / counts

    def loss(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
        """What training minimises: the batch mean of ``per_sample_loss``."""
        return self.per_sample_loss(batch, targets).mean()

    def target_score(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
        """The caption's mean log-likelihood per target token, [B] (= −``per_sample_loss``): what gradient
        attributions differentiate, as they differentiate a classifier's target logit."""
        return -self.per_sample_loss(batch, targets)

    def features_and_grad_proxy(
        self, batch: TokenBatch, targets: torch.Tensor, with_grads: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder CLS features [B, D] and, if asked, ``output_grad_proxy`` [B, g] (one forward each)."""
        features = self.features(batch)
        return features, self.output_grad_proxy(batch, targets) if with_grads else None

    @torch.no_grad()
    def output_grad_proxy(
        self,
        batch: TokenBatch,
        targets: torch.Tensor,
        max_dims: int = GRAD_PROXY_MAX_DIMS,
        seed: int = 0,
    ) -> torch.Tensor:
        """Last-layer gradient proxy per sample, averaged over its caption tokens: [B, V·(1 + D)] or less.

        As ``benchmark.selection.features_and_grads`` does for a classifier, in
        closed form from one forward pass: at target position t, with decoder
        state h_t and error e_t = softmax(W h_t + b) − onehot(y_t), the
        gradient of the output layer is (e_t, e_t h_tᵀ); the proxy is its mean
        over the caption's non-pad positions: (ē, (1/T)·Σ_t e_t h_tᵀ).

        When V·(1 + D) exceeds ``max_dims`` (a COCO vocabulary of 10 000 words
        at D = 64 gives 650 000), both parts are projected by a seeded Gaussian
        sketch that never builds the V×D outer products: with R_v [V, a] and
        R_d [D, b], Σ_t e_t h_tᵀ ↦ R_vᵀ (Σ_t e_t h_tᵀ) R_d = Σ_t (R_vᵀ e_t)(R_dᵀ h_t)ᵀ,
        a Kronecker-structured Johnson–Lindenstrauss map whose inner products
        match the unprojected ones in expectation. Then a = b ≈ √max_dims
        (bounded by V and D) and the proxy has a·(1 + b) dimensions.
        """
        self.eval()
        hidden = self.decode_states(self.encode(batch), targets[:, :-1])
        labels = targets[:, 1:]
        error = F.softmax(self.output(hidden), dim=-1) - F.one_hot(labels, self.vocab_size).to(hidden.dtype)
        valid = (labels != PAD_ID).to(hidden.dtype).unsqueeze(-1)
        error, count = error * valid, valid.sum(dim=1).clamp(min=1)
        vocab, width = self.vocab_size, hidden.shape[-1]
        if vocab * (1 + width) > max_dims:
            side = max(1, int(max_dims**0.5))
            generator = torch.Generator().manual_seed(seed)
            word_sketch = torch.randn(vocab, min(side, vocab), generator=generator) / min(side, vocab) ** 0.5
            state_sketch = torch.randn(width, min(side, width), generator=generator) / min(side, width) ** 0.5
            error = error @ word_sketch.to(error)
            hidden = hidden @ state_sketch.to(hidden)
        bias_grad = error.sum(dim=1) / count
        weight_grad = torch.einsum("btv,btd->bvd", error, hidden).flatten(1) / count
        return torch.cat([bias_grad, weight_grad], dim=1)

    @torch.no_grad()
    def generate(self, batch: TokenBatch, max_length: int | None = None) -> list[list[int]]:
        """Greedy decoding: per sample the word ids after bos, up to (without) eos, at most max_length − 2."""
        self.eval()
        limit = min(max_length or self.max_length, self.max_length)
        memory = self.encode(batch)
        tokens = torch.full((len(batch), 1), BOS_ID, dtype=torch.long, device=memory.device)
        finished = torch.zeros(len(batch), dtype=torch.bool, device=memory.device)
        for _ in range(limit - 1):
            logits = self.output(self.decode_states(memory, tokens)[:, -1])
            logits[:, PAD_ID] = -torch.inf  # padding and bos are never words
            logits[:, BOS_ID] = -torch.inf
            step = torch.where(finished, PAD_ID, logits.argmax(dim=-1))
            tokens = torch.cat([tokens, step.unsqueeze(1)], dim=1)
            finished |= step == EOS_ID
            if bool(finished.all()):
                break
        out = []
        for row in tokens[:, 1:].tolist():
            words = []
            for token in row:
                if token in (EOS_ID, PAD_ID):
                    break
                words.append(token)
            out.append(words[: limit - 2])
        return out

    @staticmethod
    def decode(ids: Sequence[int], vocabulary: Sequence[str]) -> str:
        """The caption text of word ids (as ``generate`` returns them), special tokens left out."""
        return decode_ids(ids, vocabulary)
