from __future__ import annotations

import numpy as np
import torch

from benchmark.contracts import BackboneSpec, TokenBatch, full_positions, patchify
from benchmark.model import TokenViT

SPEC = BackboneSpec(
    image_size=16, channels=3, patch_size=4, pretrain_set="shapes-15", embed_dim=32, depth=2, num_heads=2
)


def make_model() -> TokenViT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TokenViT(SPEC, num_classes=5).eval()


def test_full_token_forward_equals_timm_on_the_image() -> None:
    """Our embedding of stored uint8 patches is timm's conv patch embedding, position for position."""
    model = make_model()
    images = np.random.default_rng(0).integers(0, 256, size=(3, 3, 16, 16), dtype=np.uint8)
    patches = torch.from_numpy(patchify(images, 4))
    ours = model(TokenBatch(patches, full_positions(3, 16)))
    pixels = (torch.from_numpy(images).float() / 255.0 - 0.5) / 0.25
    theirs = model.vit(pixels)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_output_on_kept_tokens_ignores_dropped_pixels() -> None:
    model = make_model()
    rng = np.random.default_rng(1)
    patches = torch.from_numpy(rng.integers(0, 256, size=(2, 16, 48), dtype=np.uint8))
    kept = torch.tensor([[0, 3, 5, 9], [2, 4, 11, 15]])
    gather = kept.unsqueeze(-1).expand(-1, -1, 48)
    before = model(TokenBatch(patches.gather(1, gather), kept))
    changed = patches.clone()
    dropped = torch.ones(2, 16, dtype=torch.bool)
    dropped[torch.arange(2)[:, None], kept] = False
    changed[dropped] = torch.from_numpy(rng.integers(0, 256, size=(int(dropped.sum()), 48), dtype=np.uint8))
    after = model(TokenBatch(changed.gather(1, gather), kept))
    torch.testing.assert_close(before, after)
    # ...while the kept pixels do matter.
    kept_changed = patches.gather(1, gather).clone()
    kept_changed[:, 0] = 255 - kept_changed[:, 0]
    assert not torch.allclose(before, model(TokenBatch(kept_changed, kept)))


def test_positions_matter() -> None:
    model = make_model()
    patches = torch.from_numpy(np.random.default_rng(2).integers(0, 256, size=(1, 2, 48), dtype=np.uint8))
    first = model(TokenBatch(patches, torch.tensor([[0, 1]])))
    moved = model(TokenBatch(patches, torch.tensor([[7, 12]])))
    assert not torch.allclose(first, moved)


def test_backbone_state_excludes_the_head_and_loads_back() -> None:
    model = make_model()
    state = model.backbone_state()
    assert not any(key.startswith("head.") for key in state)
    other = TokenViT(SPEC, num_classes=9)
    other.load_backbone(state)
    torch.testing.assert_close(other.vit.blocks[0].attn.qkv.weight, model.vit.blocks[0].attn.qkv.weight)


def test_gather_takes_each_samples_tokens_at_its_own_places() -> None:
    generator = torch.Generator().manual_seed(0)
    patches = torch.randint(0, 256, (3, 5, 4), dtype=torch.uint8, generator=generator)
    positions = torch.tensor([[0, 2, 4, 6, 8]]).expand(3, -1)
    text = torch.randint(1, 9, (3, 6), generator=generator)
    masked = torch.rand(3, 5, generator=generator) < 0.5
    index = torch.tensor([[4, 0], [1, 2], [3, 3]])
    taken = TokenBatch(patches, positions, text, masked).gather(index)
    for sample in range(3):
        for slot, place in enumerate(index[sample].tolist()):
            assert torch.equal(taken.patches[sample, slot], patches[sample, place])
            assert taken.positions[sample, slot] == positions[sample, place]
            assert taken.masked is not None and taken.masked[sample, slot] == masked[sample, place]
    assert taken.text is text
