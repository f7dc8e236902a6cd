"""Publishing: `validate` a results folder before it is shared, `export` folders as a dataset."""

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


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(),
              help="The dataset folder to write (new or empty).")  # fmt: skip
@click.option("--license", "license_id", default="cc-by-4.0", show_default=True,
              help="The license named in the dataset card.")  # fmt: skip
@click.option("--name", help="The dataset's name in its card (default: the folder's name).")
def export(folders: tuple[str, ...], out: str, license_id: str, name: str | None) -> None:
    """Merge results FOLDERS (or exported datasets) from one or many machines into one dataset:
    runs.parquet, trials.parquet, timelines/ and a README.md dataset card. Rows are kept once
    per (machine_id, run_id, trial, window); two different rows under one key are an error."""
    from tokenwatt.publish.export import export as write

    done = write(list(folders), out, license_id, name)
    click.echo(f"dataset {done.out}: {done.runs} runs, {done.trials} trials, {done.timelines} "
               f"timelines from {done.machines} machine(s); {done.duplicates_dropped} "
               "duplicate row(s) kept once")  # fmt: skip
