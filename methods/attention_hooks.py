"""Run a ``TokenViT`` with its attention maps exposed: captured, differentiated, or suppressed.

The attribution token selectors (``methods.attribution``) need three things
from timm's ViT blocks that its forward does not hand out:

- every block's attention probabilities A_b [B, H, N, N] (N = 1 + tokens), kept
  in the autograd graph so that the gradient of a logit reaches them
  (``capture_attention``, ``attention_and_gradients``);
- the inputs and outputs of chosen submodules, for an explicit LRP pass
  (``record_activations``);
- a forward in which the pre-softmax attention scores towards chosen key
  tokens are scaled, per sample (``suppressed_attention``, for AtMan).

Everything is done with hooks or instance-level overrides that live only
inside a context manager and are removed in ``finally``, so a model leaves
these functions exactly as it came (fused attention flag included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from benchmark.contracts import TokenBatch
from benchmark.model import TokenViT

AttentionForward = Callable[..., torch.Tensor]


def attention_modules(model: TokenViT) -> list[nn.Module]:
    """The timm ``Attention`` module of every block, in forward order; anything else is refused."""
    modules = []
    for index, block in enumerate(model.vit.blocks):
        attn = block.attn
        needed = ("qkv", "num_heads", "head_dim", "scale", "attn_drop", "proj", "proj_drop", "fused_attn")
        missing = [name for name in needed if not hasattr(attn, name)]
        if missing:
            raise TypeError(
                f"block {index} attention {type(attn).__name__} lacks {missing}: not a timm Attention"
            )
        modules.append(attn)
    return modules


@dataclass
class CapturedAttention:
    """Attention probabilities of the last forward, one slot per block (None until it has run)."""

    maps: list[torch.Tensor | None] = field(default_factory=list)

    def tensors(self) -> list[torch.Tensor]:
        missing = [index for index, value in enumerate(self.maps) if value is None]
        if missing:
            raise RuntimeError(
                f"no attention was captured for blocks {missing}: run a forward inside the context"
            )
        return [value for value in self.maps if value is not None]


@contextmanager
def capture_attention(model: TokenViT) -> Iterator[CapturedAttention]:
    """Within the context, each forward stores every block's softmax output A_b [B, H, N, N].

    timm's fused path (``scaled_dot_product_attention``) never materialises
    A_b, so ``fused_attn`` is switched off per block and restored on exit. The
    map is taken at the output of ``attn_drop`` (identity in eval mode): that
    is the tensor the block multiplies with V, so a gradient taken w.r.t. it
    is ∇A_b. The tensors stay in the graph: ``torch.autograd.grad`` on them
    (rather than ``.backward()``) leaves the parameters' ``.grad`` untouched.
    """
    modules = attention_modules(model)
    captured = CapturedAttention([None] * len(modules))
    with ExitStack() as stack:
        for index, attn in enumerate(modules):
            stack.enter_context(_unfused(attn))
            stack.enter_context(
                _hooked(attn.attn_drop.register_forward_hook(_store_output(captured.maps, index)))
            )
        # With frozen weights nothing upstream of A_b would require grad: anchor the graph at the blocks.
        first_block = model.vit.blocks[0]
        stack.enter_context(_hooked(first_block.register_forward_pre_hook(_require_grad_on_input)))
        yield captured


def attention_and_gradients(
    model: nn.Module, batch: TokenBatch, targets: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Target scores [B], every encoder block's A_b and ∇A_b = ∂(target score)/∂A_b ([B, H, N, N]), detached.

    The target score is ``model.target_score`` (a classifier's target logit, a
    captioner's caption log-likelihood). Scores of the batch are summed before
    differentiating: samples do not interact in an eval-mode model, so each
    sample's maps get the gradient of its own score.
    """
    scores, maps, grads, _ = attention_and_output_gradients(model, batch, targets, ())
    return scores, maps, grads


def attention_and_output_gradients(
    model: nn.Module, batch: TokenBatch, targets: torch.Tensor, outputs_of: Sequence[nn.Module]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """As ``attention_and_gradients``, plus (output, ∂(target score)/∂output) of each module of
    ``outputs_of`` (each must run once in the forward, downstream of the first block), detached."""
    encoder = model.encoder
    outputs: list[torch.Tensor | None] = [None] * len(outputs_of)
    with torch.enable_grad(), capture_attention(encoder) as captured, ExitStack() as stack:
        for index, module in enumerate(outputs_of):
            stack.enter_context(_hooked(module.register_forward_hook(_store_output(outputs, index))))
        scores = model.target_score(batch, targets)
        total = scores.sum()  # inside enable_grad: under a caller's no_grad the sum would leave the graph
        maps = captured.tensors()
    if any(output is None for output in outputs):
        raise RuntimeError("a module whose output gradient was asked for did not run in the forward")
    seen = [output for output in outputs if output is not None]
    grads = torch.autograd.grad(total, [*maps, *seen])
    detached = [
        (output.detach(), grad.detach()) for output, grad in zip(seen, grads[len(maps) :], strict=True)
    ]
    return scores.detach(), [a.detach() for a in maps], [g.detach() for g in grads[: len(maps)]], detached


@dataclass(frozen=True)
class Activation:
    """A module's first positional input and its output, as seen in the last forward."""

    input: torch.Tensor
    output: torch.Tensor


@contextmanager
def record_activations(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, Activation]]:
    """Within the context, each forward stores ``Activation``s (detached) of the named modules."""
    records: dict[str, Activation] = {}
    with ExitStack() as stack:
        for name, module in modules.items():
            stack.enter_context(_hooked(module.register_forward_hook(_store_activation(records, name))))
        yield records


@contextmanager
def suppressed_attention(model: TokenViT, factors: torch.Tensor | None) -> Iterator[None]:
    """Within the context, every block scales the pre-softmax scores towards key j by ``factors[:, j]``.

    ``factors`` is [B, N] (per sample, per key token, N = 1 + tokens, index 0
    = CLS) and applies to every query, head and block, as AtMan does
    (Deiseroth et al. 2023). Following the authors' reference code, each row
    of scores is first shifted by its minimum, so that every score is ≥ 0 and
    a factor below 1 really lowers that key's attention (softmax ignores the
    shift, so all-ones factors change nothing but rounding). With
    ``factors=None`` the blocks compute exactly what timm's unfused path
    computes. Each block's ``forward`` is overridden on the instance and put
    back on exit.
    """
    with ExitStack() as stack:
        for attn in attention_modules(model):
            stack.enter_context(_forward_override(attn, _scaled_score_forward(attn, factors)))
        yield


def _scaled_score_forward(attn: nn.Module, factors: torch.Tensor | None) -> AttentionForward:
    """timm ``Attention.forward`` (unfused path), with ``factors`` applied to the scores before softmax."""

    def forward(
        x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        size, tokens, _ = x.shape
        if factors is not None and factors.shape != (size, tokens):
            raise ValueError(
                f"suppression factors {tuple(factors.shape)} do not fit a batch of {(size, tokens)}"
            )
        gate_layer = getattr(attn, "gate", None)
        gate = gate_layer(x).sigmoid() if gate_layer is not None else None
        qkv = attn.qkv(x).reshape(size, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        q = q * attn.scale
        scores = q @ k.transpose(-2, -1)
        if factors is not None:
            scores = (scores - scores.amin(dim=-1, keepdim=True)) * factors[:, None, None, :]
        # A mask is added after the scaling, as in the reference code, so masked keys stay masked.
        bias = _attention_bias(tokens, scores, attn_mask, is_causal)
        if bias is not None:
            scores = scores + bias
        probabilities = attn.attn_drop(scores.softmax(dim=-1))
        out = (probabilities @ v).transpose(1, 2).reshape(size, tokens, attn.num_heads * attn.head_dim)
        out = attn.norm(out) if hasattr(attn, "norm") else out
        if gate is not None:
            out = out * gate
        return attn.proj_drop(attn.proj(out))

    return forward


def _attention_bias(
    tokens: int, scores: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
) -> torch.Tensor | None:
    """Additive bias with timm's (SDPA's) semantics; kept here so older timm 1.0 releases work too."""
    if is_causal:
        return scores.new_full((tokens, tokens), float("-inf")).triu_(1)
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        return torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill_(~attn_mask, float("-inf"))
    return attn_mask


@contextmanager
def _unfused(attn: nn.Module) -> Iterator[None]:
    previous = attn.fused_attn
    attn.fused_attn = False
    try:
        yield
    finally:
        attn.fused_attn = previous


@contextmanager
def _forward_override(module: nn.Module, forward: AttentionForward) -> Iterator[None]:
    had_own = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if had_own:
            module.forward = previous
        else:
            del module.forward


@contextmanager
def _hooked(handle: torch.utils.hooks.RemovableHandle) -> Iterator[None]:
    try:
        yield
    finally:
        handle.remove()


def _store_output(slots: list[torch.Tensor | None], index: int) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        slots[index] = output

    return hook


def _store_activation(records: dict[str, Activation], name: str) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        records[name] = Activation(args[0].detach(), output.detach())

    return hook


def _require_grad_on_input(
    module: nn.Module, args: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...] | None:
    x = args[0]
    if torch.is_grad_enabled() and not x.requires_grad:
        return (x.detach().requires_grad_(True), *args[1:])
    return None
