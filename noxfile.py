"""Sessions: tests, benchmark, report, pretrain, perf, lint.

Every session shares one environment, ``.venv``, made and updated here, so torch
(a multi-GB wheel) is installed once rather than once per session. The
environment is reinstalled only when ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "none"

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"


def shared_env(session: nox.Session, extras: str = "dev") -> str:
    """Create or update ``.venv`` (pip, pinned torch from pyproject) and return its python."""
    if not PYTHON.exists():
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
        session.run(str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip", external=True)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()[:12]
    stamp = VENV / f".installed-{digest}"
    if not stamp.exists():
        session.run(str(PYTHON), "-m", "pip", "install", "--quiet", "-e", f".[{extras}]", external=True)
        stamp.touch()
    return str(PYTHON)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, slow end-to-end tests included (``-m "not slow"`` for the fast part)."""
    python = shared_env(session)
    session.run(python, "-m", "pytest", *(session.posargs or ["-q"]), external=True)


@nox.session
def lint(session: nox.Session) -> None:
    python = shared_env(session)
    session.run(python, "-m", "ruff", "check", ".", external=True)
    session.run(python, "-m", "ruff", "format", "--check", ".", external=True)


def benchmark_command(posargs: list[str]) -> list[str]:
    """``benchmark reproduce GRID [options]``: GRID is the first posarg unless it is an option
    (then ``default``); ``--jobs 2`` unless the options choose the executor or the jobs."""
    grid, options = (
        ("default", posargs) if not posargs or posargs[0].startswith("-") else (posargs[0], posargs[1:])
    )
    chosen = {option.split("=")[0] for option in options}
    jobs = [] if chosen & {"--jobs", "--executor"} else ["--jobs", "2"]
    return ["-m", "benchmark", "reproduce", grid, *jobs, *options]


@nox.session
def benchmark(session: nox.Session) -> None:
    """Reproduce ``grids/default.toml`` (or the grid named in posargs) in ``runs/<grid>/<time>/``:
    every cell run afresh, the report made there, and each cell compared with its committed record
    (``--reuse`` resumes the newest run directory; ``--cells N`` runs a sample)."""
    python = shared_env(session)
    session.run(python, *benchmark_command(session.posargs), external=True)


@nox.session
def report(session: nox.Session) -> None:
    python = shared_env(session)
    session.run(python, "-m", "benchmark", "report", *session.posargs, external=True)


@nox.session
def pretrain(session: nox.Session) -> None:
    """Remake the committed backbone weights (``weights/``) from their recipes."""
    python = shared_env(session)
    session.run(python, "-m", "benchmark", "pretrain", *session.posargs, external=True)


@nox.session
def perf(session: nox.Session) -> None:
    """Speed benchmarks; they write their tables to ``results/perf/``."""
    python = shared_env(session)
    env = {"PYTHONHASHSEED": "0", **({"CI": os.environ["CI"]} if "CI" in os.environ else {})}
    session.run(python, "-m", "tools.perf", *session.posargs, external=True, env=env)
