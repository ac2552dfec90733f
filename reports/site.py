"""A static HTML leaderboard, ``<report folder>/index.html``, that opens from disk.

One self-contained page: the leaderboard as a table sortable by a click on any header (plain
inline JavaScript; no CDN, no server, no network), a filter box, the report's figures (relative
links to the PNGs beside it, so the folder can be moved or published as is), the methods with
their registry descriptions, and the provenance: grid, seeds, commits, package versions.

``index.html?sort=<column>&order=desc`` opens the page sorted (the headers are clicked by
script, exactly as a reader would click them); the column names are the ``data-key`` of the
headers (``final_accuracy``, ``forgetting``, ``method``, …).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import registry
from benchmark.errors import UserError
from benchmark.results import write_text_atomic
from reports.leaderboard import (
    ATTRIBUTION_PREFIX,
    COVERAGE_NOTE,
    NOT_LEARNED_NOTE,
    Markup,
    coverage_short,
    display_rows,
    statistics_note,
    table_headers,
)
from reports.records import BOUND, KIND_ORDER, finished_cells, numeric_fraction
from reports.stats import DEFAULT_EQUIVALENCE_MARGIN
from reports.style import caption_path

HTML_MARKUP = Markup(
    bold=lambda text: f"<strong>{text}</strong>",
    escape=html.escape,
    dagger=' <span class="dagger" title="did not learn every task">†</span>',
    coverage_mark=' <span class="coverage" title="memory missed a class of some task">‡</span>',
    plus_minus="±",
    percent="%",
    missing="–",
)

# Leaderboard frame column whose value a displayed column sorts by, and whether it is a number.
SORT_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("task", "task", False),
    ("method", "method", False),
    ("kind", "kind", True),
    ("retention", "retention", True),
    ("token_fraction", "token_fraction", True),
    ("seeds", "seeds", True),
    ("final_accuracy", "final_accuracy_mean", True),
    ("rank", "rank", True),
    ("reference", "reference", False),
    ("difference", "difference_mean", True),
    ("verdict", "verdict", False),
    ("coreset_size", "coreset_size_ratio", True),
    ("forgetting", "forgetting_mean", True),
    ("diagonal", "diagonal_mean", True),
    ("memory", "bytes_used_mean", True),
)

LEFT_ALIGNED = frozenset({"task", "method", "kind", "reference", "verdict"})

FIGURE_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("memory_accuracy_", "Memory vs accuracy", "Final average accuracy against memory bytes used."),
    ("budget_split_", "Budget split", "Accuracy against token fraction t at fixed bytes."),
    ("forgetting_", "Forgetting", "Average forgetting per method, mean ± 95% CI over seeds."),
    (
        "coreset_size_",
        "Coreset size matched",
        "The coreset size each core tokenset performs like, as a multiple of its own bytes (the seed "
        "paper's metric).",
    ),
    (
        "accuracy_matrix_",
        "Accuracy matrices",
        "Seed-mean accuracy after each task (rows) on each task (columns): the bounds, and at the "
        "middle retention the best coreset and the best core tokenset.",
    ),
    (
        "regime_heatmaps_",
        "Regime map",
        "Best core tokenset minus best coreset, final accuracy at equal bytes, per pair of swept axes; "
        "a star marks a better or worse verdict, = an equivalent one (regimes.md has the table).",
    ),
    (
        "accuracy_vs_t_",
        "Accuracy vs token fraction",
        "Final accuracy against t at fixed bytes, and beside it the accuracy on partial test inputs "
        "(random or oracle tokens).",
    ),
    (
        "attribution_gallery",
        "Attribution gallery",
        "The tokens each token selector keeps of the same training images (computed at report time).",
    ),
)

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
.caption { color: #555; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th.text, td.text { text-align: left; }
#leaderboard th { cursor: pointer; user-select: none; background: #f3f3f3; position: sticky; top: 0; }
#leaderboard th[aria-sort="ascending"]::after { content: " ▲"; }
#leaderboard th[aria-sort="descending"]::after { content: " ▼"; }
#leaderboard tr.bound td { color: #666; }
#leaderboard tr.hidden { display: none; }
.dagger { color: #b00; }
.coverage { color: #a60; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 660px; }
figure img { max-width: 100%; border: 1px solid #eee; }
figure.wide { max-width: 100%; }
figcaption { font-size: 12px; color: #555; }
#filter { margin: 0.5em 0; padding: 3px 6px; width: 22em; }
dl dt { font-weight: 600; margin-top: 0.4em; }
"""

SCRIPT = """
(function () {
  var table = document.getElementById("leaderboard");
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function sortBy(index, descending) {
    var numeric = headers[index].dataset.type === "number";
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (row, position) { row.dataset.position = position; });
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.sort, y = b.cells[index].dataset.sort;
      var order;
      if (x === "" || y === "") {
        order = (x === "") - (y === "");  /* missing values last, in either direction */
        return order || a.dataset.position - b.dataset.position;
      }
      order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      if (descending) { order = -order; }
      return order || a.dataset.position - b.dataset.position;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    headers.forEach(function (header) { header.removeAttribute("aria-sort"); });
    headers[index].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  headers.forEach(function (header, index) {
    header.addEventListener("click", function () {
      sortBy(index, header.getAttribute("aria-sort") === "ascending");
    });
  });
  var filter = document.getElementById("filter");
  filter.addEventListener("input", function () {
    var words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
    Array.prototype.forEach.call(body.rows, function (row) {
      var text = row.textContent.toLowerCase();
      var shown = words.every(function (word) { return text.indexOf(word) >= 0; });
      row.classList.toggle("hidden", !shown);
    });
  });
  var query = new URLSearchParams(window.location.search);
  var key = query.get("sort");
  var header = headers.filter(function (h) { return h.dataset.key === key; })[0];
  if (header) {
    header.click();
    if (query.get("order") === "desc") { header.click(); }
  }
  if (query.get("filter")) {
    filter.value = query.get("filter");
    filter.dispatchEvent(new Event("input"));
  }
})();
"""


def _sort_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, str) and not value:
        return ""
    return html.escape(str(value), quote=True)


def _column_specs(frame: pd.DataFrame) -> list[tuple[str, str, bool]]:
    attribution = [
        (column.removeprefix(ATTRIBUTION_PREFIX).removesuffix("_mean"), column, True)
        for column in frame.columns
        if column.startswith(ATTRIBUTION_PREFIX)
    ]
    return [*SORT_COLUMNS, *attribution]


def leaderboard_table(frame: pd.DataFrame) -> str:
    """The ``<table id="leaderboard">``: cells as in leaderboard.md, each with a ``data-sort`` value."""
    specs = _column_specs(frame)
    headers = table_headers(frame)
    head = "".join(
        f'<th data-key="{key}" data-type="{"number" if numeric else "text"}"'
        f'{" class=text" if key in LEFT_ALIGNED else ""} title="click to sort">{html.escape(header)}</th>'
        for (key, _, numeric), header in zip(specs, headers, strict=True)
    )
    body = []
    for (_, row), cells in zip(frame.iterrows(), display_rows(frame, HTML_MARKUP), strict=True):
        values = []
        for (key, column, _), cell in zip(specs, cells, strict=True):
            raw = row[column]
            if key == "kind":
                raw = KIND_ORDER[row["kind"]]
            elif key == "retention" and row["kind"] == BOUND:
                raw = -1.0  # the bounds sort with the smallest memory
            elif key == "token_fraction":
                raw = math.nan if row["kind"] == BOUND else numeric_fraction(raw)  # auto: NaN, sorts last
            css = ' class="text"' if key in LEFT_ALIGNED else ""
            values.append(f'<td{css} data-sort="{_sort_value(raw)}">{cell}</td>')
        kind_class = row["kind"].replace(" ", "-")
        body.append(f'<tr class="{kind_class}">{"".join(values)}</tr>')
    rows = "\n".join(body)
    return f'<table id="leaderboard">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>'


def _describe(kind: str, name: str) -> str:
    try:
        return registry.describe(kind, name)
    except UserError:
        return "(not registered in this installation)"


def methods_section(cells: pd.DataFrame) -> str:
    """Each method of the results with its sample and token selector's registry descriptions."""
    methods: dict[str, tuple[str, str | None]] = {}
    tasks: set[str] = set()
    for _, row in finished_cells(cells).iterrows():
        methods.setdefault(row["method"], (row["sample_selector"], row["token_selector"]))
        tasks.add(row["task"])
    entries = []
    for task in sorted(tasks):
        entries.append(f"<dt>task {html.escape(task)}</dt><dd>{html.escape(_describe('task', task))}</dd>")
    for method, (sample, token) in sorted(methods.items()):
        sample_text = html.escape(_describe("sample_selector", sample))
        parts = [f"sample selector <code>{html.escape(sample)}</code>: {sample_text}"]
        if token:
            parts.append(
                f"token selector <code>{html.escape(token)}</code>: "
                f"{html.escape(_describe('token_selector', token))}"
            )
        entries.append(
            f'<dt id="method-{html.escape(method)}">{html.escape(method)}</dt><dd>{"<br>".join(parts)}</dd>'
        )
    return "<dl>\n" + "\n".join(entries) + "\n</dl>"


def figures_section(figures: Sequence[Path], site_dir: Path) -> str:
    """The PNGs grouped by kind, each linking to itself and its PDF; paths relative to ``site_dir``."""
    pngs = sorted(path for path in figures if path.suffix == ".png")
    parts = []
    for prefix, title, text in FIGURE_GROUPS:
        group = [path for path in pngs if path.name.startswith(prefix)]
        if not group:
            continue
        parts.append(f"<h3>{html.escape(title)}</h3>\n<p class=caption>{html.escape(text)}</p>")
        for path in group:
            relative = html.escape(_relative(path, site_dir), quote=True)
            pdf = path.with_suffix(".pdf")
            pdf_link = (
                f' · <a href="{html.escape(_relative(pdf, site_dir), quote=True)}">PDF</a>'
                if pdf in figures
                else ""
            )
            wide = ' class="wide"' if prefix == "attribution_gallery" else ""
            caption_file = caption_path(path.with_suffix(""))
            text = caption_file.read_text().strip() if caption_file.exists() else path.stem
            parts.append(
                f'<figure{wide}><a href="{relative}"><img src="{relative}" alt="{html.escape(path.stem)}" '
                f'loading="lazy"></a><figcaption>{html.escape(text)}{pdf_link}</figcaption></figure>'
            )
    return "\n".join(parts) if parts else "<p>No figures.</p>"


def _relative(path: Path, site_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), site_dir.resolve())).as_posix()


def provenance_section(frame: pd.DataFrame, cells: pd.DataFrame) -> str:
    finished = finished_cells(cells)
    grids = sorted({grid for cell in frame["grid"] for grid in cell.split(",") if grid})
    seeds = sorted({int(seed) for cell in frame["seed_values"] for seed in cell.split(",") if seed})
    commits = sorted({commit for cell in frame["commits"] for commit in cell.split(",") if commit})
    versions = sorted(
        {f"{name} {version}" for versions in finished["versions"] for name, version in versions.items()}
    )
    devices = sorted({device or "unknown" for device in finished["device"]})
    items = [
        ("Grid", ", ".join(grids) or "unknown"),
        ("Seeds", ", ".join(map(str, seeds))),
        ("Commit", ", ".join(commits) or "unknown"),
        ("Cells", f"{len(finished)} finished"),
        ("Devices", ", ".join(devices)),
        ("Versions", ", ".join(versions) or "unknown"),
    ]
    rows = "".join(
        f'<tr><th class="text">{html.escape(name)}</th><td class="text">{html.escape(value)}</td></tr>'
        for name, value in items
    )
    return f'<table id="provenance">{rows}</table>'


def render_site(
    frame: pd.DataFrame,
    cells: pd.DataFrame,
    caption: str,
    figures: Sequence[Path],
    site_dir: Path,
    notes: Sequence[str] = (),
    failed_count: int = 0,
) -> str:
    """The whole page as a string."""
    grids = sorted({grid for cell in frame["grid"] for grid in cell.split(",") if grid})
    title = f"Leaderboard: {', '.join(grids) or 'results'}"
    table_notes = [
        "Mean ± Student-t 95% confidence interval over seeds (±– with one seed). Bold: best final "
        "accuracy per task and retention (bounds excluded). Memory: bytes stored / bytes the "
        "retention allows. Click a column header to sort; click again to reverse.",
        statistics_note(frame.attrs.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN)),
    ]
    if not frame["learned"].all():
        table_notes.append(f"† {NOT_LEARNED_NOTE}")
    if coverage_short(frame).any():
        table_notes.append(f"‡ {COVERAGE_NOTE}")
    if failed_count:
        table_notes.append(f"{failed_count} cell(s) failed: see failed.md.")
    downloads = " · ".join(
        f'<a href="{name}">{name}</a>' for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.tex")
    )
    notes_html = "".join(f"<p class=caption>{html.escape(note)}</p>" for note in notes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="caption" id="caption">{html.escape(caption)}</p>
<p>core-tokenset-bench: continual learning with a memory of whole samples (coresets) or of the most
relevant tokens of more samples (core tokensets), compared at equal bytes. Tables: {downloads}.</p>
<h2>Leaderboard</h2>
<input id="filter" type="search" placeholder="filter rows, e.g. split-shapes 5%" aria-label="filter rows">
{leaderboard_table(frame)}
{"".join(f"<p class=caption>{html.escape(note)}</p>" for note in table_notes)}
<h2>Figures</h2>
{notes_html}
{figures_section(figures, site_dir)}
<h2>Methods</h2>
{methods_section(cells)}
<h2>Provenance</h2>
{provenance_section(frame, cells)}
<script>{SCRIPT}</script>
</body>
</html>
"""


def write_site(
    frame: pd.DataFrame,
    cells: pd.DataFrame,
    caption: str,
    figures: Sequence[Path],
    site_dir: Path,
    notes: Sequence[str] = (),
    failed_count: int = 0,
) -> Path:
    """``site_dir/index.html``."""
    path = site_dir / "index.html"
    write_text_atomic(path, render_site(frame, cells, caption, figures, site_dir, notes, failed_count))
    return path
