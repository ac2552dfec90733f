"""What the command line says goes through ``logging``: progress and summaries to stdout, warnings
and errors to stderr, each message as written (``error: …``, ``failed: …``).

``-q`` keeps warnings and errors only; ``-v`` adds debug lines (each cell's state, what changed
in a stale cell's code). Progress bars are tqdm's and are not log lines. Only the suite's own
loggers (``benchmark``, ``reports``) are set up; other libraries keep their own settings.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

SUITE_LOGGERS = ("benchmark", "reports")
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the ``sys.stdout`` or ``sys.stderr`` of the moment (so a test's capture sees it)."""

    def __init__(self, errors: bool) -> None:
        self.errors = errors
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr if self.errors else sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current stream


def configure(verbosity: int) -> None:
    """Set the suite's loggers to ``verbosity`` (-1 quiet, 0 normal, 1 verbose); idempotent."""
    below_warning = ConsoleHandler(errors=False)
    below_warning.addFilter(lambda record: record.levelno < logging.WARNING)
    from_warning = ConsoleHandler(errors=True)
    from_warning.setLevel(logging.WARNING)
    for name in SUITE_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
            logger.removeHandler(handler)
        logger.addHandler(below_warning)
        logger.addHandler(from_warning)
        logger.setLevel(LEVELS[max(-1, min(1, verbosity))])
        logger.propagate = False
