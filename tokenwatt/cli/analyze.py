"""The `compare` and `report` commands: parse, call the library, print."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from tokenwatt.errors import UserError
from tokenwatt.report.format import MIN_INTERVAL_N, NOT_INFORMATIVE


def _baseline(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    key, sep, val = value.partition("=")
    if not sep or not key or not val:
        raise UserError(f"--baseline: {value!r} is not KEY=VALUE, e.g. precision=bf16")
    return key.strip(), val.strip()


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--baseline", required=True, help="KEY=VALUE, e.g. precision=bf16.")
@click.option(
    "--metric",
    default=None,
    help="The energy figure to compare (a per-trial column). Default: decode_j_per_token, or "
    "total_j_per_token when a served engine's rows (engine openai, which has no decode "
    "phase) are among them.",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False),
    help="Also write the table as Markdown.",
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write a CSV.")
@click.option(
    "--tsv",
    is_flag=True,
    help="Print tab-separated values instead of the table, for machines: a header, then a row "
    "per case; the table's columns at full precision, each interval as its own low and high "
    "columns (as computed: the table hides an interval below 3 runs or trials, n_runs and "
    "n_trials say what it rests on).",
)
@click.option(
    "--allow-mixed-impl",
    is_flag=True,
    help="Also ratio MoE cases whose experts ran through another implementation than the "
    "baseline's (experts_impl); the table says so.",
)
def compare(
    results: tuple[str, ...],
    baseline: str,
    metric: str | None,
    markdown_path: str | None,
    csv_path: str | None,
    tsv: bool,
    allow_mixed_impl: bool,
) -> None:
    """Each case of RESULTS against its baseline within the same other keys.

    Each case is reduced to one mean per run (a fresh process is the unit of replication);
    the table says how many runs and trials each ratio stands on. Exit 1 when no row is usable
    (every row failed or degraded, or no run is complete).

    No number in the table is ever cut: on a narrow terminal its cells wrap between words and
    the columns that still do not fit are left out, named in a line; in a pipe or a log the
    table is printed whole, however wide.
    """
    from tokenwatt.report.comparison import compare_folders, write_csv, write_markdown

    key, value = _baseline(baseline)  # type: ignore[misc]
    for flag, path in (("--markdown", markdown_path), ("--csv", csv_path)):
        _check_output_file(flag, path)
    table = compare_folders(results, key, value, metric, allow_mixed_impl)
    print_comparison(table, tsv)
    if markdown_path:
        write_markdown(table, Path(markdown_path))
    if csv_path:
        write_csv(table, Path(csv_path))


@click.command()
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--baseline", help="KEY=VALUE for the comparison (default: chosen from the data).")
@click.option("--out", help="Where report.md, report.html and figures/ go (default: RESULTS_DIR).")
def report(results_dir: str, baseline: str | None, out: str | None) -> None:
    """Write a Markdown and an HTML report with tables, figures and how to reproduce them.

    Exit 1, writing nothing, when no row is usable (every row failed or no run is complete).
    """
    from tokenwatt.cli.console import say
    from tokenwatt.report.document import write_report
    from tokenwatt.results.folder import check_files

    check_files(Path(results_dir), "report", "give a tokenwatt results folder")
    if out and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out: {out!r} is a file; give a folder for report.md and report.html")
    paths = write_report(Path(results_dir), _baseline(baseline), Path(out) if out else None)
    for p in paths:
        say(f"wrote {p}", path=True)


def _check_output_file(flag: str, path: str | None) -> None:
    """Before any work: the file's folder exists and the path is not a folder."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag}: {path!r} is a folder; give a file path")
    if not p.parent.is_dir():
        raise UserError(f"{flag}: folder {str(p.parent)!r} does not exist; create it or give "
                        "another path")  # fmt: skip


_NO_INTERVAL = re.compile(rf"\[{NOT_INFORMATIVE}, (n=\d+)\]")


def _short_interval(cell: str) -> str:
    """`1.97 [interval not informative, n=2]` as `1.97 (n=2)†`, whole in 80 columns."""
    return _NO_INTERVAL.sub(r"(\1)†", cell)


def print_comparison(table: Any, tsv: bool = False, out: Any = None) -> None:
    """The comparison on stdout (`tsv`: tab-separated, for machines); what is missing on stderr."""
    from tokenwatt.cli.console import err_console
    from tokenwatt.report.comparison import display_rows, tsv_text

    _, rows = display_rows(table)
    if not rows:
        err_console.print("no case has a baseline to compare with")
    elif tsv:
        click.echo(tsv_text(table), nl=False)
    else:
        _print_comparison_table(table, out)
    for m in table.attrs.get("missing", []):
        err_console.print(f"no baseline for: {m}", highlight=False)


# Left out first on a narrow terminal; the case keys, the figure and its ratio always stay.
COMPARE_DROPPABLE = ("KL vs reference (nats)", "top-1 agreement vs reference",
                     "tokens/s ratio [95% CI]", "runs x trials", "baseline")  # fmt: skip


def _print_comparison_table(table: Any, out: Any = None) -> None:
    from rich.table import Table
    from rich.text import Text

    from tokenwatt.cli.console import console, say
    from tokenwatt.cli.tables import print_table
    from tokenwatt.report.comparison import basis_note, display_rows, metric_label

    out = out or console
    headers, rows = display_rows(table)
    label = "" if table.attrs.get("measured") else " · energy is an ESTIMATE"
    label += " · CONTENDED" if table.attrs.get("contended") else ""
    t = Table(title=f"{table.attrs['metric']} against {table.attrs['baseline']}{label}")
    first_figure = headers.index(metric_label(table))
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i < first_figure else "right")
    short = [[_short_interval(c) for c in cells] for cells in rows]
    for cells in short:  # as Text: "[0.85, 0.97]" is not rich markup
        t.add_row(*(Text(c) for c in cells))
    print_table(t, out, COMPARE_DROPPABLE, " or use --tsv")
    if short != rows:
        say(f"† below {MIN_INTERVAL_N} runs or trials: {NOT_INFORMATIVE}, not shown", out)
    say(basis_note(table), out)
