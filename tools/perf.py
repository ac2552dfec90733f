"""All speed benchmarks (``nox -s perf``): coreset selectors and replay throughput.

python -m tools.perf [--out results/perf]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools import perf_replay, perf_selectors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/perf"))
    arguments = parser.parse_args(argv)
    perf_selectors.main(["--out", str(arguments.out)])
    perf_replay.main(["--out", str(arguments.out)])


if __name__ == "__main__":
    main()
