"""Token selectors that need no attribution: ``random`` and the ground-truth ``oracle``."""

from __future__ import annotations

from typing import ClassVar

import torch

from benchmark import registry
from benchmark.contracts import TokenInputs


@registry.register("token_selector", "random")
class RandomTokens:
    """Uniform random token scores from the generator (the token-level baseline)."""

    needs_mask: ClassVar[bool] = False

    def rank(self, model: torch.nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor:
        shape = tuple(inputs.batch.positions.shape)
        return torch.from_numpy(inputs.rng.random(shape).astype("float32"))


@registry.register("token_selector", "oracle")
class OracleTokens:
    """Ground-truth relevance mask of the task, ties broken by the generator (an upper bound)."""

    needs_mask: ClassVar[bool] = True

    def rank(self, model: torch.nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor:
        if inputs.masks is None:
            raise ValueError("the oracle token selector needs a task with ground-truth masks")
        jitter = torch.from_numpy(inputs.rng.random(tuple(inputs.masks.shape)).astype("float32"))
        return inputs.masks.float() + 0.5 * jitter
