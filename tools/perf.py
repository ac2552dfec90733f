"""All speed benchmarks (``nox -s perf``): coreset selectors and replay throughput.

python -m tools.perf [--out results/perf] [--sizes 10000 50000 200000 1000000] [--threads 1] [--compile]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools import perf_replay, perf_selectors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/perf"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(perf_selectors.SIZES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="replay also under torch.compile")
    arguments = parser.parse_args(argv)
    common = ["--out", str(arguments.out), "--threads", str(arguments.threads)]
    perf_selectors.main([*common, "--sizes", *map(str, arguments.sizes)])
    perf_replay.main([*common, *(["--compile"] if arguments.compile else [])])


if __name__ == "__main__":
    main()
