"""Command line: python -m benchmark list | run GRID | reproduce GRID | report | show CELL | pretrain.

A bad name, a malformed grid, a missing data path or an impossible budget ends
with a one-line message and exit status 2, never a traceback. A grid whose
cells all ran exits 0; one with failed cells exits 1 after running the rest.
What the commands say goes through ``logging`` (``benchmark.logs``; ``-v``, ``-q``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark import logs, registry
from benchmark.errors import UserError

if TYPE_CHECKING:
    from benchmark.config import CellConfig
    from benchmark.executors import ExecutorOptions
    from benchmark.grid import Grid
    from benchmark.runner import GridSummary
    from benchmark.track import MlflowTracker

REPO_ROOT = Path(__file__).resolve().parent.parent
GRIDS_DIR = REPO_ROOT / "grids"
EXIT_USER_ERROR = 2
EXIT_CELLS_FAILED = 1
DESCRIPTION = (
    "A benchmark of memory selection (coresets and core tokensets) for continual learning: "
    "run grids of cells, reproduce the committed results, and report them."
)
DEFAULT_TRACKING = "$MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db under the working directory"

logger = logging.getLogger("benchmark.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    try:
        return int(args.handler(args))
    except UserError as error:
        logger.error("error: %s", error)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        logger.error("interrupted: finished cells are saved; rerun to resume")
        return 130


def verbosity_options(suppress: bool) -> argparse.ArgumentParser:
    """``-v`` / ``-q``, accepted before or after the command (``suppress``: for the commands)."""
    options = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else 0
    options.add_argument("-v", "--verbose", action="count", default=default, help="say more (each cell)")
    options.add_argument("-q", "--quiet", action="count", default=default, help="warnings and errors only")
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark", description=DESCRIPTION, parents=[verbosity_options(suppress=False)]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = [verbosity_options(suppress=True)]

    listing = commands.add_parser("list", help="list registered tasks and methods", parents=common)
    listing.set_defaults(handler=command_list)

    run = commands.add_parser("run", help="run a grid (a TOML path or a name under grids/)", parents=common)
    run.add_argument("grid")
    run.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")
    run.add_argument("--tracking-uri", default=None, help=f"MLflow URI (default: {DEFAULT_TRACKING})")
    run.add_argument(
        "--report-dir", type=Path, default=None, help="where the report goes (default: reports/<grid name>)"
    )
    run.add_argument("--no-report", action="store_true", help="do not make the report after the run")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--retry-failed", action="store_true", help="rerun cells recorded as failed")
    add_selection_options(run)
    run.add_argument(
        "--keep-stale",
        action="store_true",
        help="keep records whose code has changed since they were made (default: rerun them)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="list the cells with their hash and state (done, stale, failed, to run) and run nothing",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a grid setting, e.g. --set seeds=[0] --set task_params.split-cifar100.root=/data",
    )
    add_execution_options(run)
    run.set_defaults(handler=command_run)

    add_reproduce_parser(commands, common)

    report = commands.add_parser("report", help="leaderboard tables and figures from results", parents=common)
    report.add_argument(
        "--results", type=Path, default=None, help="a grid's results (default: results/default)"
    )
    report.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<grid name>)")
    report.set_defaults(handler=command_report)

    show = commands.add_parser(
        "show", help="print one cell record (a hash, a prefix of one, or a path)", parents=common
    )
    show.add_argument("cell")
    show.add_argument("--results", type=Path, default=Path("results"))
    show.set_defaults(handler=command_show)

    pretrain = commands.add_parser(
        "pretrain", help="pretrain the backbones the tasks need (weights/)", parents=common
    )
    pretrain.add_argument(
        "--tasks", nargs="*", default=None, help="tasks whose backbones to make (default: all)"
    )
    pretrain.add_argument("--force", action="store_true", help="remake weights that exist")
    pretrain.add_argument(
        "--token-dropout",
        type=float,
        default=0.0,
        help="patch-token dropout while pretraining ([train] pretrain_token_dropout of a grid)",
    )
    pretrain.set_defaults(handler=command_pretrain)
    return parser


def add_execution_options(parser: argparse.ArgumentParser) -> None:
    """Where and how cells run: ``--executor``, ``--jobs``, ``--threads`` and Ray's resources."""
    parser.add_argument(
        "--executor",
        default="local",
        help="where cells run: local (this machine; --jobs) or ray (a Ray cluster) (default local)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="local executor: cells run at once in worker processes (default 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per cell (default: all cores; cores // jobs with --jobs; --cpus-per-cell on Ray)",
    )
    parser.add_argument(
        "--ray-address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)"
    )
    parser.add_argument(
        "--cpus-per-cell", type=float, default=1.0, help="Ray: CPUs each cell asks for (default 1)"
    )
    parser.add_argument(
        "--gpus-per-cell", type=float, default=0.0, help="Ray: GPUs each cell asks for (default 0)"
    )


def command_list(args: argparse.Namespace) -> int:
    sections = [
        ("Tasks", "task"),
        ("Sample selectors (coresets)", "sample_selector"),
        ("Token selectors", "token_selector"),
    ]
    for title, kind in sections:
        print(f"{title}:")
        for name in registry.names(kind):
            print(f"  {name:<14} {registry.describe(kind, name)}")
    print("Methods: <sample_selector> (a coreset) or <sample_selector>+<token_selector> (a core tokenset),")
    print("         e.g. random, gradmatch+gradlrp.")
    return 0


def resolve_grid_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    candidate = GRIDS_DIR / f"{name}.toml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in GRIDS_DIR.glob("*.toml"))
    raise UserError(registry.unknown_name_message("grid", name, known))


def command_run(args: argparse.Namespace) -> int:
    from benchmark.grid import load_grid
    from benchmark.runner import run_grid
    from benchmark.track import MlflowTracker

    options = execution_options(args, args.threads)
    grid = load_grid(resolve_grid_path(args.grid), args.overrides)
    grid = dataclasses.replace(grid, cells=tuple(_selected(grid.cells, args.only)))
    if args.dry_run:
        return _dry_run(grid, args.results / grid.name, options.weights_dir, args.keep_stale)
    tracker = MlflowTracker(grid.name, args.tracking_uri)
    summary = run_grid(
        grid,
        args.results,
        tracker,
        show_progress=_progress(args),
        retry_failed=args.retry_failed,
        executor=args.executor,
        options=options,
        keep_stale=args.keep_stale,
    )
    _log_summary(summary, tracker, grid.name)
    if not args.no_report:
        _print_report(summary.results_dir, args.report_dir or REPO_ROOT / "reports" / grid.name)
    for line in summary.failed:
        logger.error("failed: %s", line)
    return EXIT_CELLS_FAILED if summary.failed or summary.skipped_failed else 0


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run only the cells with this setting (repeatable; one key given twice matches either "
        "value), e.g. --only method=gradmatch --only seed=0 --only train.replay=mask",
    )


def execution_options(args: argparse.Namespace, threads: int | None) -> ExecutorOptions:
    from benchmark.executors import ExecutorOptions, check_options
    from benchmark.pretrain import WEIGHTS_DIR

    options = ExecutorOptions(
        weights_dir=WEIGHTS_DIR,
        jobs=args.jobs,
        threads=threads,
        ray_address=args.ray_address,
        cpus_per_cell=args.cpus_per_cell,
        gpus_per_cell=args.gpus_per_cell,
    )
    check_options(args.executor, options)
    return options


def _selected(cells: Sequence[CellConfig], only: Sequence[str]) -> list[CellConfig]:
    from benchmark.plan import select_cells

    return select_cells(cells, only) if only else list(cells)


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and getattr(args, "quiet", 0) == 0


def _dry_run(grid: Grid, results_dir: Path, weights_dir: Path, keep_stale: bool) -> int:
    """Print every cell with its hash, state and code fingerprint; run nothing, write nothing."""
    from tabulate import tabulate

    from benchmark.learner import TaskCache
    from benchmark.plan import log_plan, plan_grid, plan_rows, summary_line
    from benchmark.preflight import preflight
    from benchmark.provenance import CodeFingerprints

    cache = TaskCache()
    preflight(grid, cache, weights_dir)
    plan = plan_grid(grid.cells, results_dir, cache, CodeFingerprints(weights_dir))
    print(tabulate(plan_rows(plan), headers="keys", tablefmt="plain", disable_numparse=True))
    print(f"grid {grid.name} ({results_dir}): {summary_line(plan)}; dry run: nothing was run")
    log_plan(plan, keep_stale)
    return 0


def _log_summary(summary: GridSummary, tracker: MlflowTracker, grid: str) -> None:
    logger.info(
        "grid %s: %d cells, %d already done, %d run, %d failed, %.0f s",
        grid,
        summary.cells,
        summary.skipped,
        summary.finished,
        len(summary.failed),
        summary.seconds,
    )
    if summary.running_elsewhere:
        logger.info(
            "%d cells are running in another run (their cells/<hash>.lock is held by a live process): "
            "its records land in the same results directory",
            summary.running_elsewhere,
        )
    if summary.skipped_failed:
        logger.info(
            "%d cells recorded as failed were skipped: rerun them with --retry-failed", summary.skipped_failed
        )
    logger.info("results: %s", summary.results_dir)
    logger.info(
        "MLflow:  %s (experiment %r; `mlflow ui --backend-store-uri %s`)",
        tracker.tracking_uri,
        grid,
        tracker.tracking_uri,
    )


def add_reproduce_parser(commands: argparse._SubParsersAction, common: list[argparse.ArgumentParser]) -> None:
    reproduce = commands.add_parser(
        "reproduce",
        help="rerun a grid in a run directory of its own and compare it with the committed records",
        description="Rerun a grid's cells in runs/<grid>/<time>/ (records, MLflow store, report) and "
        "compare each with its committed record: bit-identical, within the reference's seed CI, or "
        "different. Cells run at the reference records' torch thread count unless --threads is given "
        "(thread counts change float results). Exit status 1 when a cell differs or fails.",
        parents=common,
    )
    reproduce.add_argument("grid")
    reproduce.add_argument(
        "--cells",
        type=int,
        default=None,
        metavar="N",
        help="a quick sample: N cells drawn deterministically, spread over methods (default: every cell)",
    )
    add_selection_options(reproduce)
    reproduce.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the records to reproduce (default: results/<grid name>); never written to",
    )
    reproduce.add_argument(
        "--runs", type=Path, default=Path("runs"), help="where run directories go (default: runs)"
    )
    where = reproduce.add_mutually_exclusive_group()
    where.add_argument(
        "--reuse",
        action="store_true",
        help="resume the grid's newest run directory (skip the cells it has done) instead of a new one",
    )
    where.add_argument("--run-dir", type=Path, default=None, help="run (or resume) in this directory")
    reproduce.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<run dir>/mlruns/mlflow.db)",
    )
    reproduce.add_argument("--no-report", action="store_true", help="do not make the run's report")
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_execution_options(reproduce)
    reproduce.set_defaults(handler=command_reproduce)


def command_reproduce(args: argparse.Namespace) -> int:
    """Run the grid's cells into a run directory, report them there, compare with the reference."""
    from benchmark.grid import load_grid
    from benchmark.plan import read_record
    from benchmark.reproduce import (
        RunDir,
        latest_run_dir,
        load_reference,
        new_run_dir,
        reference_threads,
        sample_cells,
    )
    from benchmark.runner import run_grid
    from benchmark.track import MlflowTracker
    from reports.reproduction import compare, table, verdict, write_reproduction

    grid = load_grid(resolve_grid_path(args.grid))
    reference_dir = args.reference or Path("results") / grid.name
    reference = load_reference(reference_dir)
    cells = _selected(grid.cells, args.only)
    if args.cells is not None:
        cells = sample_cells(cells, args.cells, reference)
    grid = dataclasses.replace(grid, cells=tuple(cells))
    threads = args.threads or reference_threads(
        reference[c.config_hash] for c in cells if c.config_hash in reference
    )
    options = execution_options(args, threads)
    if args.run_dir is not None:
        run_dir = RunDir(args.run_dir)
    else:
        run_dir = (latest_run_dir(args.runs, grid.name) if args.reuse else None) or new_run_dir(
            args.runs, grid.name
        )
    logger.info(
        "reproducing %d cells of grid %s against %s (%d records) in %s%s",
        len(cells),
        grid.name,
        reference_dir,
        len(reference),
        run_dir.root,
        f", {threads} torch threads a cell as the reference" if args.threads is None and threads else "",
    )
    tracker = MlflowTracker(grid.name, args.tracking_uri, store_dir=run_dir.mlruns)
    summary = run_grid(
        grid,
        run_dir.results_root,
        tracker,
        show_progress=_progress(args),
        executor=args.executor,
        options=options,
    )
    _log_summary(summary, tracker, grid.name)
    if not args.no_report:
        _print_report(summary.results_dir, run_dir.report)
    reproduced = [read_record(summary.results_dir, cell.config_hash) for cell in cells]
    frame = compare(reference, [record for record in reproduced if record is not None])
    reproduced_ok, line = verdict(frame)
    written = write_reproduction(frame, line, run_dir.root)
    print(table(frame))
    logger.info("reproduction: %s", ", ".join(str(path) for path in written))
    print(line)
    return 0 if reproduced_ok else EXIT_CELLS_FAILED


def command_report(args: argparse.Namespace) -> int:
    results_dir = args.results or Path("results") / "default"
    _print_report(results_dir, args.out or REPO_ROOT / "reports" / results_dir.name)
    return 0


def _print_report(results_dir: Path, out_dir: Path) -> None:
    from benchmark.results import write_bytes_atomic
    from reports.make import make_report

    written = make_report(results_dir, out_dir)
    # The leaderboard's data also sits beside the records it was made from.
    copies = [results_dir / csv.name for csv in written.get("csv", [])]
    for csv, copy in zip(written.get("csv", []), copies, strict=True):
        write_bytes_atomic(copy, csv.read_bytes())
    written["csv"] = [*written.get("csv", []), *copies]
    for kind, paths in written.items():
        for path in paths:
            logger.info("%s: %s", kind, path)


def command_show(args: argparse.Namespace) -> int:
    from benchmark.results import read_result

    path = Path(args.cell)
    if not path.exists():
        matches = sorted(args.results.rglob(f"cells/{args.cell}*.json")) if args.results.exists() else []
        if not matches:
            raise UserError(f"no cell record matches {args.cell!r} under {args.results}")
        if len(matches) > 1:
            raise UserError(f"{args.cell!r} matches {len(matches)} cells; give more of the hash")
        path = matches[0]
    record = read_result(path)
    config = record["config"]
    print(f"cell {record.get('config_hash')} ({path})")
    print(
        f"  {config.get('task')} · {config.get('method')} · retention {config.get('retention')} · "
        f"token fraction {config.get('token_fraction')} · seed {config.get('seed')}"
    )
    print(f"  status: {record['status']}" + (f" ({record.get('error')})" if record.get("error") else ""))
    for row_index, row in enumerate(record.get("accuracy_matrix") or []):
        print(f"  after task {row_index + 1}: " + " ".join(f"{value:.3f}" for value in row))
    for key in (
        "diagonal_mean",
        "final_average_accuracy",
        "average_forgetting",
        "backward_transfer",
        "bytes_used",
        "bytes_allowed",
        "selection_seconds",
        "training_seconds",
    ):
        if record.get(key) is not None:
            print(f"  {key}: {record[key]}")
    if record.get("attribution"):
        print(f"  attribution: {json.dumps(record['attribution'])}")
    return 0


def command_pretrain(args: argparse.Namespace) -> int:
    from benchmark.pretrain import default_recipe, pretrain, weights_path

    if not 0.0 <= args.token_dropout < 1.0:
        raise UserError(f"--token-dropout must be in [0, 1), got {args.token_dropout:g}")
    tasks = args.tasks or registry.names("task")
    made: set[str] = set()
    for task in tasks:
        try:
            stream = registry.create("task", task).build()
        except UserError as error:  # a task that reads a user's data may be absent here
            logger.warning("skip %s: %s", task, error)
            continue
        recipe = default_recipe(stream.backbone, args.token_dropout)
        path = weights_path(recipe)
        if path.name in made:
            continue
        made.add(path.name)
        if path.exists() and not args.force:
            logger.info("%s: %s exists (recipe %s)", task, path, recipe.recipe_hash)
            continue
        logger.info("%s: wrote %s", task, pretrain(recipe))
    return 0
