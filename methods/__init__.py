"""Methods: each module registers its selectors with ``@registry.register(kind, name)``."""

from methods import attribution, baselines, coresets, token_basic, tokengreedy

__all__ = ["attribution", "baselines", "coresets", "token_basic", "tokengreedy"]
