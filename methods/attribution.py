"""Attribution token selectors: rank a stored sample's patch tokens by relevance for its true label.

Definitions follow docs/methods.md ("Token selectors"); A_b is block b's attention
probabilities [B, H, N, N] (N = 1 + P, index 0 = CLS), ∇A_b the gradient of
the target logit w.r.t. A_b. Every ``rank`` works on ``inputs.device`` with
the model in eval mode, returns float32 [B, P] on the CPU, and leaves the
model as it found it: per-module train/eval flags restored, no ``.grad``
written (gradients are taken with ``torch.autograd.grad`` on the attention
maps, never ``.backward()``).

LRP for ``gradlrp``: the rules are written here, after the authors' reference
implementation (hila-chefer/Transformer-Explainability, ``modules/layers_ours.py``
and ``baselines/ViT/ViT_LRP.py``), not taken from a library, because

- lxt 2.1 (AttnLRP) cannot be imported without ``transformers`` (its package
  ``__init__`` imports its Llama/Qwen/Gemma patches) and declares
  ``transformers``, ``accelerate``, ``bitsandbytes`` and ``open_clip_torch``
  as hard requirements; its only ViT map is for torchvision's ViT, it patches
  classes process-wide (``nn.LayerNorm.forward`` and friends), and its rules
  are AttnLRP's, not those Chefer et al. define R_{A_b} with;
- zennit 0.5.1 installs cleanly but attaches rules to modules only (Linear,
  Conv, BatchNorm): timm's attention products and softmax are function calls
  inside ``Attention.forward``, so every attention-specific rule, the residual
  rule and the read-out of R_{A_b} would still be hand-written, mixed with
  zennit's gradient hooks.

The rules (Chefer, Gur & Wolf 2021, Sec. 3, and their code): linear layers
use LRP-α1β0 (z⁺ on inputs split by sign, bias ignored); LayerNorm, GELU,
softmax, dropout, LayerScale are identity; each product of two activations
(QKᵀ, AV) gives each operand gradient×input relevance, halved; each residual
sum splits relevance in proportion to x·R/z and renormalises the two parts so
that their totals keep the ratio of their absolute values and add up to the
incoming total (done per sample here; the reference sums over the batch,
which it only ever runs at size 1).

Where the relevance starts. A classifier's starts at its logits (the one-hot of
the target class) and reaches the blocks through the head at the CLS token, so
its rollout is read at row 0 (CLS), as in the paper. A captioner
(``benchmark.captioner``) has no logits of the image: its decoder reads every
encoder token state. The decoder is not decomposed by LRP rules; the relevance
of the encoder's output states X (after the final LayerNorm, an identity rule)
is gradient × input of the target score, the caption's log-likelihood:
R_X = X ⊙ ∂s/∂X (gradient × input, Shrikumar et al. 2016, which equals LRP-0
on a bias-free piecewise-linear network). From there the same rules run down
the encoder blocks, and the rollout is read at the mix of its rows weighted by
each output token's share of the positive relevance, w_i ∝ (Σ_d R_X[i, d])⁺ —
for a classifier that mix is row 0 alone, since only CLS reaches the head. This
extension is ours, not the paper's (Chefer et al.'s encoder–decoder method is
their ICCV 2021 "Generic Attention-model Explainability", ``gradrollout`` here).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark import registry
from benchmark.contracts import TokenBatch, TokenInputs
from benchmark.model import TokenViT
from methods.attention_hooks import (
    Activation,
    attention_and_gradients,
    attention_and_output_gradients,
    capture_attention,
    record_activations,
    suppressed_attention,
)

EPSILON = 1e-9  # LRP stabiliser of every division, as in the reference code


# ---------------------------------------------------------------- shared plumbing


@contextmanager
def evaluation(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every submodule's own train/eval flag restored on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _on_device(inputs: TokenInputs, targets: torch.Tensor) -> tuple[TokenBatch, torch.Tensor]:
    return inputs.batch.to(inputs.device), targets.to(inputs.device, dtype=torch.int64)


def _encoder_of(model: nn.Module) -> TokenViT:
    """The ViT whose attention is read: the model itself, or a captioner's image encoder."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, TokenViT):
        raise TypeError(
            f"attribution token selectors need a model with a TokenViT encoder, got {type(model).__name__}"
        )
    return encoder


def _patch_scores(relevance: torch.Tensor, patches: int) -> torch.Tensor:
    """Row 0 (CLS) of a [B, N, N] relevance matrix, the ``patches`` patch columns (text columns, if any,
    follow them and are left out), as float32 on the CPU."""
    return relevance[:, 0, 1 : 1 + patches].detach().float().cpu().contiguous()


def attention_rollout(maps: Sequence[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Abnar & Zuidema (2020): R = Â_L ⋯ Â_1 with Â_b = (1 − r)·mean_heads(A_b) + r·I, rows renormalised."""
    first = maps[0]
    eye = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device)
    rollout = eye.expand(first.shape[0], -1, -1)
    for attention in maps:
        mixed = (1.0 - residual) * attention.mean(dim=1) + residual * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout


def relevance_rollout(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. (2021): R = I, then R ← R + W_b · R block by block, for weights W_b [B, N, N]."""
    first = weights[0]
    rollout = torch.eye(first.shape[-1], dtype=first.dtype, device=first.device).expand(
        first.shape[0], -1, -1
    )
    for weight in weights:
        rollout = rollout + weight @ rollout
    return rollout


def positive_head_mean(gradient: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """E_h[(∇A ⊙ X)⁺]: [B, H, N, N] → [B, N, N]."""
    return (gradient * relevance).clamp(min=0).mean(dim=1)


# ---------------------------------------------------------------- selectors


@registry.register("token_selector", "rollout")
class RolloutTokens:
    """Attention rollout (Abnar & Zuidema 2020): CLS row of the product of residual-mixed head-mean maps."""

    needs_mask: ClassVar[bool] = False

    def __init__(self, *, residual: float = 0.5) -> None:
        if not 0.0 <= residual < 1.0:
            raise ValueError(f"residual must be in [0, 1), got {residual}")
        self.residual = residual

    def rank(self, model: nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor:
        vit = _encoder_of(model)
        batch, _ = _on_device(inputs, targets)
        with evaluation(vit), torch.no_grad(), capture_attention(vit) as captured:
            vit.features(batch)
            maps = captured.tensors()
        return _patch_scores(attention_rollout(maps, self.residual), batch.positions.shape[1])


@registry.register("token_selector", "gradcam")
class AttentionGradCAMTokens:
    """Attention GradCAM (the baseline of Chefer et al. 2021): CLS row of E_h[(∇A_L ⊙ A_L)⁺], last block.

    docs/methods.md's definition, as the issue states it. The baseline in Chefer's
    code instead weights each head's CLS row by that head's mean gradient
    (GradCAM's channel weights) and applies the ReLU after the head mean.
    """

    needs_mask: ClassVar[bool] = False

    def rank(self, model: nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor:
        batch, labels = _on_device(inputs, targets)
        with evaluation(model):
            _, maps, grads = attention_and_gradients(model, batch, labels)
        return _patch_scores(positive_head_mean(grads[-1], maps[-1]), batch.positions.shape[1])


@registry.register("token_selector", "gradrollout")
class GradientRolloutTokens:
    """Gradient rollout (Chefer et al. 2021, "Generic Attention-model Explainability"): R += E_h[(∇A⊙A)⁺]R."""

    needs_mask: ClassVar[bool] = False

    def rank(self, model: nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor:
        batch, labels = _on_device(inputs, targets)
        with evaluation(model):
            _, maps, grads = attention_and_gradients(model, batch, labels)
        weights = [positive_head_mean(g, a) for g, a in zip(grads, maps, strict=True)]
        return _patch_scores(relevance_rollout(weights), batch.positions.shape[1])


@registry.register("token_selector", "gradlrp")
class TransformerAttributionTokens:
    """Transformer attribution (Chefer, Gur & Wolf 2021): rollout R += E_h[(∇A⊙R_A)⁺]R, R_A from LRP.

    From "Transformer Interpretability Beyond Attention Visualization":
    R_A = R_{A_b} is the LRP relevance of the target class reaching block b's
    attention map (rules: module docstring,
    ``lrp_attention_relevance``). On a captioner the relevance starts at the
    encoder's output states (gradient × input of the caption log-likelihood)
    and the rollout is read at the output tokens' relevance mix (module docstring).
    """

    needs_mask: ClassVar[bool] = False

    def rank(self, model: nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor:
        batch, labels = _on_device(inputs, targets)
        with evaluation(model):
            grads, relevances, _, read_out = gradients_and_lrp_read_out(model, batch, labels)
        weights = [positive_head_mean(g, r) for g, r in zip(grads, relevances, strict=True)]
        rollout = relevance_rollout(weights)
        patches = batch.positions.shape[1]
        if isinstance(model, TokenViT):
            return _patch_scores(rollout, patches)  # row 0: what read_out selects, without the product
        return _patch_scores(read_out.unsqueeze(1) @ rollout, patches)


@registry.register("token_selector", "atman")
class AtManTokens:
    """AtMan (Deiseroth et al. 2023): target loss increase when a token's attention is suppressed everywhere.

    For patch j, the pre-softmax scores of every query towards j are scaled by
    1 − f in every block and head; with conceptual suppression, every patch k
    whose input embedding has cosine similarity s ≥ κ to j's is scaled by
    1 − f·s (the reference code's (1 − f')(1 − s) + f' with f' = 1 − f).
    Similarities use the tokens as they enter the first block (patch plus
    positional embedding), as the reference code uses the input embeddings.
    Relevance of j = CE(target | j suppressed) − CE(target | nothing
    suppressed), both through the same score path. The P perturbations of a
    sample are batched: ``chunk_size`` perturbed copies per forward.
    """

    needs_mask: ClassVar[bool] = False

    def __init__(
        self, *, suppression: float = 0.9, similarity_threshold: float | None = 0.7, chunk_size: int = 256
    ) -> None:
        if not 0.0 < suppression <= 1.0:
            raise ValueError(f"suppression must be in (0, 1], got {suppression}")
        if similarity_threshold is not None and not 0.0 < similarity_threshold <= 1.0:
            raise ValueError(f"similarity_threshold must be in (0, 1] or None, got {similarity_threshold}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.suppression = suppression
        self.similarity_threshold = similarity_threshold
        self.chunk_size = chunk_size

    def rank(self, model: nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor:
        vit = _encoder_of(model)
        batch, labels = _on_device(inputs, targets)
        with evaluation(model), torch.no_grad():
            patches = batch.positions.shape[1]
            table = suppression_factors(
                vit.embed(batch)[:, 1 : 1 + patches], self.suppression, self.similarity_threshold
            )
            if batch.text is not None:  # text keys are never suppressed
                text_columns = table.new_ones(*table.shape[:2], batch.text.shape[1])
                table = torch.cat([table, text_columns], dim=2)
            size, tokens, width = table.shape
            samples = torch.arange(size, device=table.device)
            base = self._losses(model, batch, labels, samples, torch.ones(size, width, device=table.device))
            # Row r of the perturbed pass is sample r // P with patch r % P suppressed.
            owners = samples.repeat_interleave(tokens)
            perturbed = self._losses(model, batch, labels, owners, table.reshape(-1, width))
        return (perturbed.view(size, tokens) - base[:, None]).float().cpu()

    def _losses(
        self,
        model: nn.Module,
        batch: TokenBatch,
        labels: torch.Tensor,
        owners: torch.Tensor,
        factors: torch.Tensor,
    ) -> torch.Tensor:
        """Target cross-entropy of sample ``owners[r]`` under score factors ``factors[r]``, per row r.

        Rows are gathered one chunk at a time, so the P-fold copy of the batch
        never exists as a whole.
        """
        losses = []
        for start in range(0, len(owners), self.chunk_size):
            rows = owners[start : start + self.chunk_size]
            with suppressed_attention(_encoder_of(model), factors[start : start + self.chunk_size]):
                losses.append(model.per_sample_loss(batch.take(rows), labels[rows]).float())
        return torch.cat(losses)


def suppression_factors(
    embeddings: torch.Tensor, suppression: float, threshold: float | None
) -> torch.Tensor:
    """[B, P, 1 + P]: row j = the score factor per key (CLS first) when patch j is suppressed.

    Patch j itself gets 1 − f; with a threshold κ, every other patch k with
    cos(e_j, e_k) ≥ κ gets 1 − f·cos(e_j, e_k); CLS and the rest keep 1.
    """
    size, tokens, _ = embeddings.shape
    factors = torch.ones(size, tokens, tokens, dtype=torch.float32, device=embeddings.device)
    if threshold is not None:
        unit = F.normalize(embeddings.float(), dim=-1, eps=1e-8)
        similarity = (unit @ unit.transpose(1, 2)).clamp(-1.0, 1.0)
        factors = torch.where(similarity >= threshold, 1.0 - suppression * similarity, factors)
    eye = torch.eye(tokens, dtype=torch.bool, device=embeddings.device).expand(size, -1, -1)
    factors = factors.masked_fill(eye, 1.0 - suppression)  # exact, whatever rounding did to cos(e_j, e_j)
    cls_column = torch.ones(size, tokens, 1, dtype=torch.float32, device=embeddings.device)
    return torch.cat([cls_column, factors], dim=2)


# ---------------------------------------------------------------- LRP (Chefer, Gur & Wolf 2021)


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / (denominator + ε·sign(denominator)), and 0 where the denominator is exactly 0.

    The reference adds +ε whatever the sign, which can blow up at −ε; the
    sign-aware stabiliser is LRP-ε's usual form and differs only there.
    """
    stabilised = denominator + EPSILON * torch.where(denominator >= 0, 1.0, -1.0)
    return torch.where(denominator == 0, torch.zeros_like(numerator), numerator / stabilised)


def lrp_linear(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """LRP-α1β0 through y = x Wᵀ (+ b, ignored): positive contributions x⁺W⁺ and x⁻W⁻ share the relevance."""
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    scale = safe_divide(relevance, F.linear(x_pos, w_pos) + F.linear(x_neg, w_neg))
    return x_pos * (scale @ w_pos) + x_neg * (scale @ w_neg)


def lrp_matmul(
    left: torch.Tensor, right: torch.Tensor, relevance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of two activations Z = L @ R: each operand gets half its gradient×input relevance."""
    scale = safe_divide(relevance, left @ right)
    return left * (scale @ right.transpose(-2, -1)) / 2, right * (left.transpose(-2, -1) @ scale) / 2


def lrp_residual(
    skip: torch.Tensor, branch: torch.Tensor, relevance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual z = skip + branch: proportional split, renormalised per sample so the totals are conserved."""
    scale = safe_divide(relevance, skip + branch)
    parts = (skip * scale, branch * scale)
    dims = tuple(range(1, relevance.dim()))
    sums = [part.sum(dim=dims, keepdim=True) for part in parts]
    total = relevance.sum(dim=dims, keepdim=True)
    magnitude = sums[0].abs() + sums[1].abs()
    shares = [safe_divide(s.abs(), magnitude) * total for s in sums]
    return parts[0] * safe_divide(shares[0], sums[0]), parts[1] * safe_divide(shares[1], sums[1])


def _lrp_modules(model: TokenViT, head: bool = True) -> dict[str, nn.Module]:
    """The submodules whose inputs/outputs the relevance pass reads, by a stable name."""
    modules: dict[str, nn.Module] = {"head": model.head} if head else {}
    for index, block in enumerate(model.vit.blocks):
        attn = block.attn
        if getattr(attn, "gate", None) is not None:
            raise NotImplementedError("gradlrp has no LRP rule for gated attention")
        modules |= {
            f"{index}.block": block,
            f"{index}.qkv": attn.qkv,
            f"{index}.q_norm": attn.q_norm,
            f"{index}.k_norm": attn.k_norm,
            f"{index}.attn_drop": attn.attn_drop,
            f"{index}.proj": attn.proj,
            f"{index}.ls1": block.ls1,
            f"{index}.fc1": block.mlp.fc1,
            f"{index}.fc2": block.mlp.fc2,
            f"{index}.ls2": block.ls2,
        }
    return modules


def gradients_and_lrp(
    model: nn.Module, batch: TokenBatch, targets: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """∇A_b and LRP relevance R_{A_b} per block ([B, H, N, N]); the relevance [B, N, D] at the blocks' input.

    One forward records what the rules need and the attention maps; the
    gradient comes from autograd, the relevance from the explicit pass below,
    started from the one-hot of the target class at a classifier's logits, or
    from gradient × input at a captioner's encoder output (module docstring).
    """
    grads, relevances, at_input, _ = gradients_and_lrp_read_out(model, batch, targets)
    return grads, relevances, at_input


def gradients_and_lrp_read_out(
    model: nn.Module, batch: TokenBatch, targets: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``gradients_and_lrp`` and the row mix w [B, N] the rollout is read at (CLS alone for a classifier)."""
    if isinstance(model, TokenViT):
        with record_activations(_lrp_modules(model)) as seen:
            scores, _, grads = attention_and_gradients(model, batch, targets)
        with torch.no_grad():
            start = F.one_hot(targets, model.head.out_features).to(scores.dtype)
            relevances, at_input = lrp_attention_relevance(model, seen, start)
        read_out = torch.zeros(at_input.shape[:2], dtype=at_input.dtype, device=at_input.device)
        read_out[:, 0] = 1.0
        return grads, relevances, at_input, read_out
    encoder = _encoder_of(model)
    with record_activations(_lrp_modules(encoder, head=False)) as seen:
        _, _, grads, outputs = attention_and_output_gradients(model, batch, targets, [encoder.vit.norm])
    with torch.no_grad():
        states, state_grads = outputs[0]
        at_output = states * state_grads  # gradient × input; the final LayerNorm is an identity rule
        relevances, at_input = lrp_block_relevance(encoder, seen, at_output)
        per_token = at_output.sum(dim=-1).clamp(min=0)
        read_out = safe_divide(per_token, per_token.sum(dim=1, keepdim=True))
    return grads, relevances, at_input, read_out


def lrp_attention_relevance(
    model: TokenViT, seen: dict[str, Activation], relevance_at_logits: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Propagate relevance from the logits down the recorded blocks: R_{A_b} per block, and R at the input."""
    head = seen["head"]
    pooled = lrp_linear(head.input, model.head.weight, relevance_at_logits)
    # fc_norm and the final norm are identity rules; only CLS (token 0) is read by the head.
    relevance = torch.zeros_like(seen["0.block"].input)
    relevance[:, 0] = pooled
    return lrp_block_relevance(model, seen, relevance)


def lrp_block_relevance(
    model: TokenViT, seen: dict[str, Activation], relevance_at_output: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Propagate relevance [B, N, D] at the last block's output down the recorded blocks: R_{A_b} per
    block, and R at the first block's input."""
    relevance = relevance_at_output
    blocks = list(model.vit.blocks)
    per_block: list[torch.Tensor] = [torch.empty(0)] * len(blocks)
    for index in reversed(range(len(blocks))):
        relevance, per_block[index] = _block_relevance(blocks[index], index, seen, relevance)
    return per_block, relevance


def _block_relevance(
    block: nn.Module, index: int, seen: dict[str, Activation], relevance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pre-norm block backwards: MLP residual, then attention residual. Returns (R at input, R_A)."""
    x_in = seen[f"{index}.block"].input
    attn_out = seen[f"{index}.ls1"].output
    mlp_out = seen[f"{index}.ls2"].output
    # Second residual: x_out = x_mid + MLP(norm2(x_mid)); GELU, norm2 and LayerScale are identity rules.
    skip, branch = lrp_residual(x_in + attn_out, mlp_out, relevance)
    branch = lrp_linear(seen[f"{index}.fc2"].input, block.mlp.fc2.weight, branch)
    branch = lrp_linear(seen[f"{index}.fc1"].input, block.mlp.fc1.weight, branch)
    relevance = skip + branch
    # First residual: x_mid = x_in + Attn(norm1(x_in)).
    skip, branch = lrp_residual(x_in, attn_out, relevance)
    branch, attention_relevance = _attention_relevance(block.attn, index, seen, branch)
    return skip + branch, attention_relevance


def _attention_relevance(
    attn: nn.Module, index: int, seen: dict[str, Activation], relevance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance through proj, AV, softmax (identity), QKᵀ and qkv: (R at the norm1 output, R_A)."""
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv = seen[f"{index}.qkv"]
    size, tokens = qkv.output.shape[:2]
    value = qkv.output.reshape(size, tokens, 3, heads, head_dim)[:, :, 2].transpose(1, 2)
    query, key = seen[f"{index}.q_norm"].output, seen[f"{index}.k_norm"].output
    probabilities = seen[f"{index}.attn_drop"].output
    # attn.norm (scale_norm) before proj is an identity rule.
    relevance = lrp_linear(seen[f"{index}.proj"].input, attn.proj.weight, relevance)
    relevance = relevance.reshape(size, tokens, heads, head_dim).transpose(1, 2)
    attention_relevance, value_relevance = lrp_matmul(probabilities, value, relevance)
    # Softmax and the 1/√d scale are identity rules, so R_A reaches the scores QKᵀ unchanged.
    query_relevance, key_t_relevance = lrp_matmul(query, key.transpose(-2, -1), attention_relevance)
    stacked = torch.stack([query_relevance, key_t_relevance.transpose(-2, -1), value_relevance], dim=2)
    stacked = stacked.permute(0, 3, 2, 1, 4).reshape(size, tokens, 3 * heads * head_dim)
    return lrp_linear(qkv.input, attn.qkv.weight, stacked), attention_relevance
