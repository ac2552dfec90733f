"""Methods: each module registers its selectors with ``@registry.register(kind, name)``."""

from methods import baselines, token_basic

__all__ = ["baselines", "token_basic"]
