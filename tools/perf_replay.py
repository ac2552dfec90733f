"""Training throughput when replaying a fraction t of each sample's tokens (a measurement, not a test).

Core tokensets feed only their kept tokens to the model, so a replay step's
cost should fall with t. The model always sees the CLS token too, so the
ceiling of the speed-up is (P + 1) / (ceil(t P) + 1): 17/5 = 3.4x at t = 1/4 on
16 tokens, 65/17 = 3.8x on 64. Two measurements, one thread:

- ``replay_throughput``: training steps (forward, backward, AdamW) on batches
  of ``batch_size`` samples that all keep ceil(t P) tokens, against t = 1, with
  AdamW's fused kernel (protocol 2's optimizer) and with its per-tensor loop
  (protocol 1's), with timm's attention written out in matrix products instead
  of ``scaled_dot_product_attention`` (whose CPU kernel costs a little for every
  sample and head, however short the sequence), and (``--compile``) with the
  model under ``torch.compile``;
- ``replay_in_step``: the suite's own step, ``batch_size / 2`` new samples
  (every token) plus as many replayed at t, one backward and one AdamW step;
  ``replay_ms`` is what the replayed half adds to a step of new samples alone;
  ``packed_replay_ms`` the same with both halves in one ragged forward
  (``packed_logits``: the token-wise layers run once on the tokens of both,
  attention per half), which the suite's step does not do (yet): it measures
  what packing would save, the per-operator cost the replayed half pays again.

Times are CPU seconds of this process (``time.process_time``: a machine shared
with other jobs inflates them far less than wall time), best of ``repeats``
rounds; a setting's steps are timed in turn within each round
(``interleaved_best_ms``), so that a drifting machine moves them alike.

    python -m tools.perf_replay        # writes results/perf/replay_throughput.{csv,md}
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tabulate import tabulate

from benchmark.contracts import BackboneSpec, TokenBatch
from benchmark.memory import kept_token_count
from benchmark.model import TokenViT
from benchmark.results import write_text_atomic
from benchmark.train import seeded_generator

OUTPUT_DIR = Path("results/perf")
FRACTIONS = (1.0, 0.5, 0.25, 0.1)
STEPS, ROUNDS = 20, 5  # steps a timed run; rounds, the best of which is kept
SETTINGS = {
    "split-shapes (16 tokens)": BackboneSpec(32, 3, 8, "shapes-15"),
    "32×32, patch 4 (64 tokens)": BackboneSpec(32, 3, 4, "shapes-15"),
}


@dataclass(frozen=True)
class StepWay:
    """How a timed step runs: AdamW's fused kernel (protocol 2) or its per-tensor loop (protocol 1);
    the model's forward (and so its backward) compiled by torch.compile (inductor) or eager; timm's
    attention through ``scaled_dot_product_attention`` (the suite's) or written out."""

    fused: bool
    compiled: bool = False
    sdpa: bool = True
    packed: bool = False  # all batches in one ragged forward (``packed_logits``), not one forward each


OPTIMIZERS = {"fused": StepWay(True), "loop": StepWay(False)}
PACKED = StepWay(True, packed=True)
COMPILED = {"fused+compile": StepWay(True, compiled=True)}
MATH_ATTENTION = {"fused+math-attention": StepWay(True, sdpa=False)}


def ideal_speedup(fraction: float, tokens: int) -> float:
    """(P + 1) / (ceil(t P) + 1): the token-count ratio, CLS included."""
    return (tokens + 1) / (kept_token_count(fraction, tokens) + 1)


def _batch(
    spec: BackboneSpec, kept: int, size: int, generator: torch.Generator
) -> tuple[TokenBatch, torch.Tensor]:
    patch_bytes = spec.channels * spec.patch_size**2
    patches = torch.randint(0, 256, (size, kept, patch_bytes), dtype=torch.uint8, generator=generator)
    positions = torch.rand(size, spec.tokens, generator=generator).argsort(dim=1)[:, :kept]
    return TokenBatch(patches, positions), torch.randint(0, 10, (size,), generator=generator)


def _model_and_optimizer(
    spec: BackboneSpec, fused: bool, sdpa: bool = True
) -> tuple[TokenViT, torch.optim.Optimizer]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TokenViT(spec, num_classes=10)
    for block in model.vit.blocks:
        block.attn.fused_attn = sdpa  # timm: False writes attention out as q k^T, softmax, times v
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)


def interleaved_best_ms(
    steps_by_key: dict[Hashable, Callable[[], None]], steps: int, repeats: int
) -> dict[Hashable, float]:
    """CPU milliseconds a step of each closure, best of ``repeats`` rounds of ``steps`` steps.

    Each closure first takes three warm-up steps; then every round times every closure once, in
    turn, so that a machine that slows down or speeds up during the run moves all of them alike
    and the ratios between them stay comparable.
    """
    for step in steps_by_key.values():
        for _ in range(3):
            step()
    best = dict.fromkeys(steps_by_key, float("inf"))
    for _ in range(repeats):
        for key, step in steps_by_key.items():
            started = time.process_time()
            for _ in range(steps):
                step()
            best[key] = min(best[key], time.process_time() - started)
    return {key: 1e3 * seconds / steps for key, seconds in best.items()}


def packed_logits(model: TokenViT, batches: list[TokenBatch]) -> list[torch.Tensor]:
    """The logits of each batch, as ``model(batch)`` gives them, from one ragged forward.

    The batches' tokens (CLS first in each sample) are laid end to end, [sum of B_i L_i, D], so that
    every token-wise layer (norms, qkv, projection, MLP) runs once for all of them; attention runs
    per batch, whose samples share a length. Equal to the separate forwards up to rounding.
    """
    vit = model.vit
    embedded = [vit.norm_pre(model.embed(batch)) for batch in batches]
    shapes = [tuple(tokens.shape[:2]) for tokens in embedded]
    counts = [size * length for size, length in shapes]  # tokens of each batch, end to end
    x = torch.cat([tokens.flatten(0, 1) for tokens in embedded])
    for block in vit.blocks:
        attention = block.attn
        mixed = []
        for part, (size, length) in zip(attention.qkv(block.norm1(x)).split(counts), shapes, strict=True):
            q, k, v = part.reshape(size, length, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            q, k = attention.q_norm(q), attention.k_norm(k)
            if attention.fused_attn:
                out = F.scaled_dot_product_attention(q, k, v)
            else:
                out = ((q * attention.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
            mixed.append(out.transpose(1, 2).reshape(size * length, -1))
        x = x + block.ls1(attention.proj(attention.norm(torch.cat(mixed))))
        x = x + block.ls2(block.mlp(block.norm2(x)))
    return [
        model.head(vit.fc_norm(tokens.view(size, length, -1)[:, 0]))
        for tokens, (size, length) in zip(vit.norm(x).split(counts), shapes, strict=True)
    ]


def make_step(spec: BackboneSpec, parts: list[tuple[float, int]], way: StepWay) -> Callable[[], None]:
    """One training step on batches of (token fraction, samples): their losses added, one backward
    (``way.compiled``: the model's forward through ``torch.compile``, compiled in the warm-up steps)."""
    generator = seeded_generator(0, 99)
    model, optimizer = _model_and_optimizer(spec, way.fused, way.sdpa)
    forward = torch.compile(model, dynamic=False) if way.compiled else model
    batches = [_batch(spec, kept_token_count(t, spec.tokens), size, generator) for t, size in parts]

    def step() -> None:
        if way.packed:
            outputs = packed_logits(model, [batch for batch, _ in batches])
        else:
            outputs = [forward(batch) for batch, _ in batches]
        loss = sum(F.cross_entropy(out, labels) for out, (_, labels) in zip(outputs, batches, strict=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()

    return step


def run_replay_perf(
    batch_size: int = 64,
    steps: int = STEPS,
    repeats: int = ROUNDS,
    compiled: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The throughput and in-step tables; each setting's steps are timed together, interleaved."""
    throughput, in_step = [], []
    ways = {**OPTIMIZERS, **MATH_ATTENTION, **(COMPILED if compiled else {})}
    half = batch_size // 2
    for setting, spec in SETTINGS.items():
        plan: dict[Hashable, tuple[list[tuple[float, int]], StepWay]] = {
            (name, fraction): ([(fraction, batch_size)], way)
            for name, way in ways.items()
            for fraction in FRACTIONS
        }
        plan["new only"] = ([(1.0, half)], OPTIMIZERS["fused"])
        for fraction in FRACTIONS:
            plan[("in step", fraction)] = ([(1.0, half), (fraction, half)], OPTIMIZERS["fused"])
            plan[("in step packed", fraction)] = ([(1.0, half), (fraction, half)], PACKED)
        ms = interleaved_best_ms({key: make_step(spec, *how) for key, how in plan.items()}, steps, repeats)
        for name in ways:
            for fraction in FRACTIONS:
                speedup = ms[(name, 1.0)] / ms[(name, fraction)]
                ideal = ideal_speedup(fraction, spec.tokens)
                throughput.append(
                    {
                        "setting": setting,
                        "optimizer": name,
                        "token_fraction": fraction,
                        "tokens": kept_token_count(fraction, spec.tokens),
                        "steps_per_second": round(1e3 / ms[(name, fraction)], 2),
                        "speedup": round(speedup, 2),
                        "ideal_speedup": round(ideal, 2),
                        "of_ideal": round(speedup / ideal, 3),
                    }
                )
        alone = ms["new only"]
        replay = {fraction: ms[("in step", fraction)] - alone for fraction in FRACTIONS}
        packed = {fraction: ms[("in step packed", fraction)] - alone for fraction in FRACTIONS}
        for fraction in FRACTIONS:
            in_step.append(
                {
                    "setting": setting,
                    "token_fraction": fraction,
                    "new_only_ms": round(alone, 2),
                    "replay_ms": round(replay[fraction], 2),
                    "replay_speedup": round(replay[1.0] / replay[fraction], 2),
                    "packed_replay_ms": round(packed[fraction], 2),
                    "packed_replay_speedup": round(packed[1.0] / packed[fraction], 2),
                    "ideal_speedup": round(ideal_speedup(fraction, spec.tokens), 2),
                }
            )
    return pd.DataFrame(throughput), pd.DataFrame(in_step)


def write_results(
    throughput: pd.DataFrame,
    in_step: pd.DataFrame,
    directory: Path,
    batch_size: int,
    steps: int = STEPS,
    repeats: int = ROUNDS,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / "replay_throughput.csv", throughput.to_csv(index=False))
    write_text_atomic(directory / "replay_in_step.csv", in_step.to_csv(index=False))
    header = (
        "# Replay throughput by token fraction\n\n"
        f"Training steps a second (batch {batch_size}, width 64, depth 4; forward, backward, AdamW) on "
        f"{torch.get_num_threads()} CPU thread(s), CPU time, best of {repeats} rounds of {steps} steps "
        "(every step of a setting timed in turn in each round); `speedup` = steps/s ÷ steps/s at t = 1; "
        "`ideal_speedup` = (tokens + 1) ÷ (kept + 1), the CLS token included; `of_ideal` = "
        "speedup ÷ ideal. `fused` is AdamW's fused kernel (protocol 2), `loop` its per-tensor loop, "
        "`fused+math-attention` the fused step with timm's attention written out instead of "
        "`scaled_dot_product_attention` (the suite's), `fused+compile` the fused step with the model "
        "under `torch.compile` (`--compile`).\n\n"
    )
    step_header = (
        f"\n\n## The replayed half of the suite's step ({batch_size // 2} new + {batch_size // 2} "
        "replayed)\n\n"
        "`replay_ms` = CPU ms a step of new samples plus replayed ones takes beyond the new samples "
        "alone (`new_only_ms`); `replay_speedup` = that at t = 1 ÷ that at t (fused AdamW). "
        "`packed_replay_*`: the same with new and replayed samples in one ragged forward (token-wise "
        "layers once over both, attention per half; not the suite's step).\n\n"
    )
    write_text_atomic(
        directory / "replay_throughput.md",
        header
        + tabulate(throughput, headers="keys", tablefmt="pipe", showindex=False)
        + step_header
        + tabulate(in_step, headers="keys", tablefmt="pipe", showindex=False)
        + "\n",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR)
    parser.add_argument("--batch-size", type=int, default=64, help="samples a step (the suite: 32 + 32)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=STEPS, help="steps a timed run")
    parser.add_argument("--repeats", type=int, default=ROUNDS, help="rounds; the best of them is kept")
    parser.add_argument(
        "--compile", action="store_true", help="also time the model under torch.compile (minutes to compile)"
    )
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    throughput, in_step = run_replay_perf(
        arguments.batch_size, arguments.steps, arguments.repeats, compiled=arguments.compile
    )
    write_results(
        throughput, in_step, arguments.out, arguments.batch_size, arguments.steps, arguments.repeats
    )
    print(tabulate(throughput, headers="keys", tablefmt="github", showindex=False))
    print(tabulate(in_step, headers="keys", tablefmt="github", showindex=False))


if __name__ == "__main__":
    main()
