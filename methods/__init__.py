"""Methods: each module registers its selectors with ``@registry.register(kind, name)``."""

from methods import attribution, baselines, token_basic

__all__ = ["attribution", "baselines", "token_basic"]
