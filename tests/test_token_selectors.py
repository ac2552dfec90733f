"""Attribution token selectors: contracts, closed forms, exact attention paths, and mask precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import methods.attribution as attribution
from benchmark import registry
from benchmark.contracts import BackboneSpec, TokenBatch, TokenInputs, full_positions, patchify
from benchmark.model import TokenViT
from benchmark.pretrain import default_recipe, load_backbone_weights, weights_path
from benchmark.train import TrainSettings, seeded_generator, train_experience, whole
from methods.attention_hooks import attention_modules, capture_attention, suppressed_attention

SELECTORS = ("rollout", "gradcam", "gradrollout", "gradlrp", "atman")
SPEC = BackboneSpec(
    image_size=16, channels=3, patch_size=4, pretrain_set="shapes-15", embed_dim=32, depth=3, num_heads=2
)
TOKENS = SPEC.tokens  # 16


@pytest.fixture(scope="module")
def tiny() -> tuple[TokenViT, TokenBatch, torch.Tensor]:
    """A randomly initialised 3-block ViT and a batch of 6 random 16-token samples with labels."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TokenViT(SPEC, num_classes=5).eval()
    rng = np.random.default_rng(0)
    patches = torch.from_numpy(rng.integers(0, 256, size=(6, TOKENS, 48), dtype=np.uint8))
    return model, TokenBatch(patches, full_positions(6, TOKENS)), torch.from_numpy(rng.integers(0, 5, 6))


def rank(
    name: str, model: TokenViT, batch: TokenBatch, targets: torch.Tensor, **params: object
) -> torch.Tensor:
    selector = registry.create("token_selector", name, **params)
    return selector.rank(model, TokenInputs(batch, np.random.default_rng(0)), targets)


# ---------------------------------------------------------------- contracts


@pytest.mark.parametrize("name", SELECTORS)
def test_selector_returns_finite_float32_scores_deterministically(name: str, tiny) -> None:
    model, batch, targets = tiny
    first = rank(name, model, batch, targets)
    assert first.dtype == torch.float32 and first.shape == (6, TOKENS) and first.device.type == "cpu"
    assert torch.isfinite(first).all()
    assert torch.equal(first, rank(name, model, batch, targets))
    assert not registry.get("token_selector", name).needs_mask


@pytest.mark.parametrize("name", SELECTORS)
def test_selector_leaves_the_model_as_it_found_it(name: str, tiny) -> None:
    model, batch, targets = tiny
    model.train()
    model.vit.blocks[0].eval()  # a mixed state must come back as it was, not as model.train()
    marker = torch.full_like(model.head.weight, 3.0)
    model.head.weight.grad = marker.clone()
    fused = [attn.fused_attn for attn in attention_modules(model)]
    try:
        rank(name, model, batch, targets)
        assert model.training and not model.vit.blocks[0].training and model.vit.blocks[1].training
        assert torch.equal(model.head.weight.grad, marker)
        assert all(p.grad is None for n, p in model.named_parameters() if n != "vit.head.weight")
        assert [attn.fused_attn for attn in attention_modules(model)] == fused
        assert all("forward" not in attn.__dict__ for attn in attention_modules(model))
    finally:
        model.head.weight.grad = None
        model.eval()


def test_gradient_selectors_work_with_frozen_weights_and_under_no_grad(tiny) -> None:
    model, batch, targets = tiny
    expected = {name: rank(name, model, batch, targets) for name in ("gradcam", "gradlrp")}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        with torch.no_grad():
            for name, scores in expected.items():
                torch.testing.assert_close(rank(name, model, batch, targets), scores)
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)


# ---------------------------------------------------------------- attention paths


def test_no_suppression_reproduces_timm_exactly(tiny) -> None:
    model, batch, _ = tiny
    with torch.no_grad():
        fused = model(batch)
        for attn in attention_modules(model):
            attn.fused_attn = False
        try:
            unfused = model(batch)
        finally:
            for attn in attention_modules(model):
                attn.fused_attn = True
        with suppressed_attention(model, None):
            ours = model(batch)
    assert torch.equal(ours, unfused)  # same operations in the same order as timm's unfused path
    torch.testing.assert_close(ours, fused)  # and the fused (SDPA) path up to rounding
    assert all("forward" not in attn.__dict__ for attn in attention_modules(model))


def test_suppression_lowers_attention_to_the_suppressed_key_and_is_undone_on_error(tiny) -> None:
    model, batch, _ = tiny
    factors = torch.ones(len(batch), 1 + TOKENS)
    factors[:, 5] = 0.1
    with torch.no_grad(), capture_attention(model) as captured:
        model(batch)
        plain = captured.tensors()[0].clone()
        with suppressed_attention(model, factors):
            model(batch)
        suppressed = captured.tensors()[0]
    # Block 0 sees the same input, so only key 5's scores changed: its attention drops for every query
    # and head, except where key 5 holds the row's minimum score, which the shift maps to 0 (as in
    # AtMan's code).
    assert (suppressed[..., 5] <= plain[..., 5] + 1e-7).all()  # equal there, up to rounding
    assert (suppressed[..., 5] < plain[..., 5]).float().mean() > 0.9
    with pytest.raises(RuntimeError), suppressed_attention(model, factors):
        raise RuntimeError("boom")
    assert all("forward" not in attn.__dict__ for attn in attention_modules(model))


def test_capture_restores_fused_attention_and_gives_row_stochastic_maps(tiny) -> None:
    model, batch, _ = tiny
    with torch.no_grad(), capture_attention(model) as captured:
        assert not any(attn.fused_attn for attn in attention_modules(model))
        model(batch)
    maps = captured.tensors()
    assert len(maps) == SPEC.depth and maps[0].shape == (6, SPEC.num_heads, 1 + TOKENS, 1 + TOKENS)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(6, SPEC.num_heads, 1 + TOKENS))
    assert all(attn.fused_attn for attn in attention_modules(model))


# ---------------------------------------------------------------- closed forms


def test_rollout_is_the_product_of_residual_mixed_head_means(tiny) -> None:
    model, batch, targets = tiny
    with torch.no_grad(), capture_attention(model) as captured:
        model(batch)
    expected = np.stack([np.eye(1 + TOKENS)] * len(batch))
    for attention in captured.tensors():
        mixed = 0.5 * attention.double().numpy().mean(axis=1) + 0.5 * np.eye(1 + TOKENS)
        expected = (mixed / mixed.sum(axis=-1, keepdims=True)) @ expected
    np.testing.assert_allclose(rank("rollout", model, batch, targets).numpy(), expected[:, 0, 1:], rtol=1e-5)


def test_rollout_of_uniform_attention_has_a_closed_form() -> None:
    # Â = ½J/N + ½I for every block, so Â^L = 2^-L·I + (1 − 2^-L)·J/N.
    tokens, depth = 9, 4
    uniform = [torch.full((2, 3, tokens, tokens), 1.0 / tokens, dtype=torch.float64)] * depth
    rollout = attribution.attention_rollout(uniform)
    expected = 0.5**depth * torch.eye(tokens, dtype=torch.float64) + (1 - 0.5**depth) / tokens
    torch.testing.assert_close(rollout, expected.expand(2, -1, -1))


def test_relevance_rollout_adds_identity_then_multiplies() -> None:
    weights = [
        torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(3)
    ]
    eye = torch.eye(5, dtype=torch.float64)
    expected = (eye + weights[2]) @ (eye + weights[1]) @ (eye + weights[0])
    torch.testing.assert_close(attribution.relevance_rollout(weights), expected)


def test_gradcam_equals_direct_autograd_on_the_last_attention(tiny) -> None:
    model, batch, targets = tiny
    sample = 2
    scores = rank("gradcam", model, batch, targets)[sample]
    one = TokenBatch(batch.patches[sample : sample + 1], batch.positions[sample : sample + 1])
    x = model.vit.blocks[:-1](model.embed(one))
    last = model.vit.blocks[-1]
    attn = last.attn
    heads, width = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(last.norm1(x)).reshape(1, 1 + TOKENS, 3, heads, width).permute(2, 0, 3, 1, 4)
    probabilities = ((q * width**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = attn.proj((probabilities @ v).transpose(1, 2).reshape(1, 1 + TOKENS, heads * width))
    x = x + out
    x = x + last.mlp(last.norm2(x))
    logit = model.head(model.vit.norm(x)[:, 0])[0, targets[sample]]
    (gradient,) = torch.autograd.grad(logit, probabilities)
    expected = (gradient * probabilities).clamp(min=0).mean(dim=1)[0, 0, 1:]
    torch.testing.assert_close(scores, expected.detach(), rtol=1e-4, atol=1e-7)


def test_lrp_conserves_the_target_relevance_down_to_the_blocks_input(tiny) -> None:
    # z⁺ on linear layers, the renormalised residual rule and the halved product rule are each
    # conservative, so the one-hot relevance at the logits arrives whole at the first block's input.
    model, batch, targets = tiny
    grads, relevances, at_input = attribution.gradients_and_lrp(model, batch, targets)
    torch.testing.assert_close(at_input.sum(dim=(1, 2)), torch.ones(len(batch)), rtol=1e-4, atol=1e-4)
    assert len(relevances) == SPEC.depth and relevances[0].shape == grads[0].shape
    assert not torch.allclose(
        rank("gradlrp", model, batch, targets), rank("gradrollout", model, batch, targets)
    )


def test_suppression_factors_follow_atman_conceptual_suppression() -> None:
    # cos(e0, e1) = 1/√1.04 ≈ 0.981 ≥ κ; cos(e1, e2) ≈ 0.196 and cos(e0, e2) = 0 stay below it.
    embeddings = torch.tensor([[[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]]])
    similar = 1 - 0.9 / 1.04**0.5
    expected = torch.tensor(
        [[[1.0, 0.1, similar, 1.0], [1.0, similar, 0.1, 1.0], [1.0, 1.0, 1.0, 0.1]]]  # CLS column first
    )
    torch.testing.assert_close(attribution.suppression_factors(embeddings, 0.9, 0.7), expected)
    only_self = attribution.suppression_factors(embeddings, suppression=0.9, threshold=None)
    torch.testing.assert_close(only_self[0, :, 1:], 1 - 0.9 * torch.eye(3))


def test_atman_is_the_loss_increase_of_each_single_suppression(tiny) -> None:
    model, batch, targets = tiny
    scores = rank("atman", model, batch, targets, chunk_size=7)
    factors = attribution.suppression_factors(model.embed(batch)[:, 1:].detach(), 0.9, 0.7)
    sample, token = 4, 11
    one = TokenBatch(batch.patches[sample : sample + 1], batch.positions[sample : sample + 1])
    with torch.no_grad():
        with suppressed_attention(model, torch.ones(1, 1 + TOKENS)):
            base = F.cross_entropy(model(one), targets[sample : sample + 1])
        with suppressed_attention(model, factors[sample, token][None]):
            perturbed = F.cross_entropy(model(one), targets[sample : sample + 1])
    torch.testing.assert_close(scores[sample, token], perturbed - base, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        scores, rank("atman", model, batch, targets, chunk_size=1000), rtol=1e-4, atol=1e-6
    )


# ---------------------------------------------------------------- mask precision on split-shapes

TOP_K = 4
# Precision of the top-4 tokens inside the object mask, on the 240 training samples of the first two
# split-shapes experiences (masks cover 11% of the tokens, 1.8 of 16 on average), measured with the
# committed shapes-15 backbone fine-tuned jointly on both experiences (2 epochs, AdamW 3e-4, batch 32):
#   random 0.102   rollout 0.417   gradcam 0.374   gradrollout 0.408   gradlrp 0.408   atman 0.354
#   oracle 0.441 (the ceiling: most masks hold fewer than 4 tokens)
# Every attribution selector sits 0.25–0.32 above random; the test asks for 0.15.
MARGIN_OVER_RANDOM = 0.15


@pytest.fixture(scope="module")
def shapes_model() -> tuple[TokenViT, TokenBatch, torch.Tensor, torch.Tensor]:
    stream = registry.create("task", "split-shapes", train_per_class=60, test_per_class=10).build()
    recipe = default_recipe(stream.backbone)
    if not weights_path(recipe).exists():
        pytest.skip(f"pretrained backbone {weights_path(recipe).name} is missing: run `nox -s pretrain`")
    experiences = stream.experiences[:2]
    patches = torch.from_numpy(
        np.concatenate([patchify(e.train_images, stream.backbone.patch_size) for e in experiences])
    )
    labels = torch.from_numpy(np.concatenate([e.train_labels for e in experiences]))
    masks = torch.from_numpy(np.concatenate([e.train_masks for e in experiences]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TokenViT(stream.backbone, stream.num_classes)
    model.load_backbone(load_backbone_weights(recipe))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    settings = TrainSettings(
        epochs=2, batch_size=32, replay_batch_size=32, input_dropout=0.0, eval_batch_size=256
    )
    train_experience(
        model, optimizer, whole(patches), labels, None, settings, seeded_generator(0, 1), torch.device("cpu")
    )
    model.eval()
    return model, TokenBatch(patches, full_positions(len(labels), patches.shape[1])), labels, masks


def top_k_precision(
    model: TokenViT, name: str, batch: TokenBatch, labels: torch.Tensor, masks: torch.Tensor
) -> float:
    scores = registry.create("token_selector", name).rank(
        model, TokenInputs(batch, np.random.default_rng(0)), labels
    )
    top = torch.sort(-scores, dim=1, stable=True).indices[:, :TOP_K]  # as benchmark.selection keeps them
    return float(masks.gather(1, top).float().mean())


@pytest.mark.parametrize("name", SELECTORS)
def test_attribution_puts_more_top_tokens_on_the_object_than_random(name: str, shapes_model) -> None:
    model, batch, labels, masks = shapes_model
    random = top_k_precision(model, "random", batch, labels, masks)
    precision = top_k_precision(model, name, batch, labels, masks)
    assert precision >= random + MARGIN_OVER_RANDOM, (
        f"{name}: precision {precision:.3f} vs random {random:.3f}"
    )
