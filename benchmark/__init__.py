"""core-tokenset-bench: memory selection for continual learning of transformers."""

from benchmark import registry

__all__ = ["registry"]
