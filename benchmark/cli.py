"""Command line: ``python -m benchmark list | run GRID | report | show CELL | pretrain``.

A bad name, a malformed grid, a missing data path or an impossible budget ends
with a one-line message and exit status 2, never a traceback. A grid whose
cells all ran exits 0; one with failed cells exits 1 after running the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark import registry
from benchmark.errors import UserError

if TYPE_CHECKING:
    from benchmark.pretrain import PretrainRecipe

REPO_ROOT = Path(__file__).resolve().parent.parent
GRIDS_DIR = REPO_ROOT / "grids"
EXIT_USER_ERROR = 2
EXIT_CELLS_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; rerun to resume", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="list registered tasks and methods")
    listing.set_defaults(handler=command_list)

    run = commands.add_parser("run", help="run a grid (a TOML path or a name under grids/)")
    run.add_argument("grid")
    run.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")
    run.add_argument(
        "--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or mlruns/)"
    )
    run.add_argument(
        "--report-dir", type=Path, default=None, help="where the report goes (default: reports/<grid name>)"
    )
    run.add_argument("--no-report", action="store_true", help="do not make the report after the run")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--retry-failed", action="store_true", help="rerun cells recorded as failed")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a grid setting, e.g. --set seeds=[0] --set task_params.split-cifar100.root=/data",
    )
    run.add_argument(
        "--executor",
        default="local",
        help="where cells run: local (this machine; --jobs) or ray (a Ray cluster) (default local)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="local executor: cells run at once in worker processes (default 1)",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per cell (default: all cores; cores // jobs with --jobs; --cpus-per-cell on Ray)",
    )
    run.add_argument(
        "--ray-address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)"
    )
    run.add_argument(
        "--cpus-per-cell", type=float, default=1.0, help="Ray: CPUs each cell asks for (default 1)"
    )
    run.add_argument(
        "--gpus-per-cell", type=float, default=0.0, help="Ray: GPUs each cell asks for (default 0)"
    )
    run.set_defaults(handler=command_run)

    report = commands.add_parser("report", help="leaderboard tables and figures from results")
    report.add_argument(
        "--results", type=Path, default=None, help="a grid's results (default: results/default)"
    )
    report.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<grid name>)")
    report.set_defaults(handler=command_report)

    show = commands.add_parser("show", help="print one cell record (a hash, a prefix of one, or a path)")
    show.add_argument("cell")
    show.add_argument("--results", type=Path, default=Path("results"))
    show.set_defaults(handler=command_show)

    pretrain = commands.add_parser("pretrain", help="pretrain the backbones the tasks need (weights/)")
    pretrain.add_argument(
        "--tasks", nargs="*", default=None, help="tasks whose backbones to make (default: all)"
    )
    pretrain.add_argument(
        "--grid",
        action="append",
        default=None,
        help="also make every backbone this grid's cells start from (repeatable; a path or a name)",
    )
    pretrain.add_argument("--force", action="store_true", help="remake weights that exist")
    pretrain.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where to train (default cpu, as the committed weights were made; cuda for paper scale)",
    )
    pretrain.add_argument(
        "--token-dropout",
        type=float,
        default=0.0,
        help="patch-token dropout while pretraining ([train] pretrain_token_dropout of a grid)",
    )
    pretrain.set_defaults(handler=command_pretrain)
    return parser


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
    from benchmark.executors import ExecutorOptions, check_options
    from benchmark.grid import load_grid
    from benchmark.pretrain import WEIGHTS_DIR
    from benchmark.runner import run_grid
    from benchmark.track import MlflowTracker

    options = ExecutorOptions(
        weights_dir=WEIGHTS_DIR,
        jobs=args.jobs,
        threads=args.threads,
        ray_address=args.ray_address,
        cpus_per_cell=args.cpus_per_cell,
        gpus_per_cell=args.gpus_per_cell,
    )
    check_options(args.executor, options)
    grid = load_grid(resolve_grid_path(args.grid), args.overrides)
    tracker = MlflowTracker(grid.name, args.tracking_uri)
    summary = run_grid(
        grid,
        args.results,
        tracker,
        show_progress=not args.no_progress,
        retry_failed=args.retry_failed,
        executor=args.executor,
        options=options,
    )
    print(
        f"grid {grid.name}: {summary.cells} cells, {summary.skipped} already done, "
        f"{summary.finished} run, {len(summary.failed)} failed, {summary.seconds:.0f} s"
    )
    if summary.running_elsewhere:
        print(
            f"{summary.running_elsewhere} cells are running in another run (their cells/<hash>.lock is "
            "held by a live process): its records land in the same results directory"
        )
    if summary.skipped_failed:
        print(
            f"{summary.skipped_failed} cells recorded as failed were skipped: rerun them with --retry-failed"
        )
    print(f"results: {summary.results_dir}")
    print(
        f"MLflow:  {tracker.tracking_uri} (experiment {grid.name!r}; "
        f"`mlflow ui --backend-store-uri {tracker.tracking_uri}`)"
    )
    if not args.no_report:
        _print_report(summary.results_dir, args.report_dir or REPO_ROOT / "reports" / grid.name)
    for line in summary.failed:
        print(f"failed: {line}", file=sys.stderr)
    return EXIT_CELLS_FAILED if summary.failed or summary.skipped_failed else 0


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
            print(f"{kind}: {path}")


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
    """Each task's default backbone (``--tasks``), or with ``--grid`` only the backbones the grids need."""
    import torch

    from benchmark.pretrain import default_recipe, pretrain, weights_path

    if not 0.0 <= args.token_dropout < 1.0:
        raise UserError(f"--token-dropout must be in [0, 1), got {args.token_dropout:g}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but CUDA is not available")
    device = torch.device(args.device)
    wanted: list[tuple[str, PretrainRecipe]] = []
    if args.tasks is not None or not args.grid:
        for task in args.tasks or registry.names("task"):
            try:
                stream = registry.create("task", task).build()
            except UserError as error:  # a task that reads a user's data may be absent here
                print(f"skip {task}: {error}")
                continue
            wanted.append((task, default_recipe(stream.backbone, args.token_dropout)))
    for name in args.grid or []:
        wanted += grid_recipes(name)
    made: set[str] = set()
    for label, recipe in wanted:
        path = weights_path(recipe)
        if path.name in made:
            continue
        made.add(path.name)
        if path.exists() and not args.force:
            print(f"{label}: {path} exists (recipe {recipe.recipe_hash})")
            continue
        print(f"{label}: wrote {pretrain(recipe, device=device)}")
    return 0


def grid_recipes(name: str) -> list[tuple[str, PretrainRecipe]]:
    """(task label, recipe) of every pretrained backbone a grid's cells start from, in cell order."""
    from benchmark.cell import TaskCache
    from benchmark.grid import load_grid
    from benchmark.pretrain import default_recipe

    grid = load_grid(resolve_grid_path(name))
    cache = TaskCache()
    recipes = []
    for cell in grid.cells:
        if cell.train.pretrained and not cell.train.backbone_weights:
            spec = cache.get(cell.task, cell.task_params).backbone
            label = f"{grid.name} {cell.task} ({spec.tokens} tokens)"
            recipes.append((label, default_recipe(spec, cell.train.pretrain_token_dropout)))
    return recipes
