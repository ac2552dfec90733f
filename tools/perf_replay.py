"""Training throughput when replaying a fraction t of each sample's tokens (a measurement, not a test).

Core tokensets feed only their kept tokens to the model, so a replay step's
cost should fall with t: attention is quadratic and the MLPs linear in the
token count, so the blocks' time should approach t (a speed-up of 1/t) until
fixed costs (CLS token, head, optimizer step) dominate.

    python -m tools.perf_replay        # writes results/perf/replay_throughput.{csv,md}
"""

from __future__ import annotations

import argparse
import time
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
SETTINGS = {
    "split-shapes (16 tokens)": BackboneSpec(32, 3, 8, "shapes-15"),
    "32×32, patch 4 (64 tokens)": BackboneSpec(32, 3, 4, "shapes-15"),
}


def steps_per_second(spec: BackboneSpec, fraction: float, batch_size: int, steps: int, repeats: int) -> float:
    """Training steps a second (forward, backward, AdamW) on batches of ⌈t·P⌉ tokens; best of repeats."""
    generator = seeded_generator(0, 99)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TokenViT(spec, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    kept = kept_token_count(fraction, spec.tokens)
    patch_bytes = spec.channels * spec.patch_size**2
    patches = torch.randint(0, 256, (batch_size, kept, patch_bytes), dtype=torch.uint8, generator=generator)
    positions = torch.rand(batch_size, spec.tokens, generator=generator).argsort(dim=1)[:, :kept]
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    batch = TokenBatch(patches, positions)

    def step() -> None:
        loss = F.cross_entropy(model(batch), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up
        step()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - started)
    return steps / best


def run_replay_perf(batch_size: int = 64, steps: int = 20, repeats: int = 3) -> pd.DataFrame:
    rows = []
    for setting, spec in SETTINGS.items():
        full = None
        for fraction in FRACTIONS:
            rate = steps_per_second(spec, fraction, batch_size, steps, repeats)
            full = full or rate
            rows.append(
                {
                    "setting": setting,
                    "token_fraction": fraction,
                    "tokens": kept_token_count(fraction, spec.tokens),
                    "steps_per_second": round(rate, 2),
                    "speedup": round(rate / full, 2),
                    "ideal_speedup": round(spec.tokens / kept_token_count(fraction, spec.tokens), 2),
                }
            )
    return pd.DataFrame(rows)


def write_results(table: pd.DataFrame, directory: Path, batch_size: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / "replay_throughput.csv", table.to_csv(index=False))
    header = (
        "# Replay throughput by token fraction\n\n"
        f"Training steps a second (batch {batch_size}, width 64, depth 4; forward, backward, AdamW) on "
        f"{torch.get_num_threads()} CPU threads, best of 3; `speedup` = steps/s ÷ steps/s at t = 1, "
        "`ideal_speedup` = tokens at t = 1 ÷ tokens kept.\n\n"
    )
    write_text_atomic(
        directory / "replay_throughput.md",
        header + tabulate(table, headers="keys", tablefmt="pipe", showindex=False),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR)
    parser.add_argument("--batch-size", type=int, default=64)
    arguments = parser.parse_args(argv)
    table = run_replay_perf(arguments.batch_size)
    write_results(table, arguments.out, arguments.batch_size)
    print(tabulate(table, headers="keys", tablefmt="github", showindex=False))


if __name__ == "__main__":
    main()
