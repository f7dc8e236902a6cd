"""The `validate` command (and, with it, what publishing a results folder asks)."""

from __future__ import annotations

import click


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@click.option("--publishable", is_flag=True,
              help="Also fail on estimates, contended trials and runs the quality rule does "
              "not pass (publishable=False).")  # fmt: skip
def validate(folders: tuple[str, ...], publishable: bool) -> None:
    """Check results FOLDERS against themselves before they are shared: every derived figure
    recomputed from its raw columns, every summary row from its trials, run.json against the
    CSVs, no row twice. One line per problem; exit 0 clean, 1 not, 2 bad input."""
    from tokenwatt.errors import InvalidResults
    from tokenwatt.publish.validate import validate as check

    total = 0
    for folder in folders:
        problems = check(folder, publishable=publishable)
        for p in problems:
            click.echo(p.line(folder.rstrip("/")))
        total += len(problems)
        if not problems:
            click.echo(f"ok: {folder}")
    if total:
        raise InvalidResults(f"{total} problem(s) in {len(folders)} folder(s); each is a line "
                             "above")  # fmt: skip
