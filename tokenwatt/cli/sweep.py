"""The `sweep` command: plan, run through an executor, print what happened."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

# (flag, click settings): each is also a key of the sweep file's `slurm:` block (the flag wins)
SLURM_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--partition", {"help": "Slurm partition (default: the cluster's default)."}),
    ("--time-limit", {"type": click.IntRange(min=1),
                      "help": "Slurm time limit per case, minutes [default: 60]."}),
    ("--account", {"help": "Slurm account to charge."}),
    ("--qos", {"help": "Slurm quality of service."}),
    ("--constraint", {"help": "Slurm node features, e.g. h100 or 'a100&nvlink'."}),
    ("--mem", {"help": "Memory per case's job, e.g. 32G (sbatch --mem)."}),
    ("--cpus-per-task", {"type": click.IntRange(min=1),
                         "help": "CPUs per case's job [default: 2]."}),
    ("--gpus-per-case", {"type": click.IntRange(min=0),
                         "help": "GPUs a device-auto case asks for: 0 or 1 [default: 1 where "
                                 "the partition's nodes have GPUs, else 0]; gpus: N in the "
                                 "sweep places a model across N."}),
    ("--array-parallelism", {"type": click.IntRange(min=1),
                             "help": "Slurm array tasks running at once [default: 8]."}),
    ("--sbatch", {"multiple": True,
                  "help": "An extra sbatch flag, e.g. --sbatch=--mail-type=END (repeatable)."}),
]  # fmt: skip


def slurm_flags(f: Any) -> Any:
    for name, settings in reversed(SLURM_FLAGS):
        f = click.option(name, **settings)(f)
    return f


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", help="Results folder (default: the config's out).")
@click.option("--force", is_flag=True, help="Rerun every case, even complete ones.")
@click.option("--retry-failed", is_flag=True, help="Rerun the cases that failed before.")
@click.option("--dry-run", is_flag=True, help="List the cases and what would run; run nothing.")
@click.option("--region", help="Carbon region for every case (ISO3, grid region or profile).")
@click.option("--pue", type=float, help="Facility PUE for every case (>= 1).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
# default: tokenwatt.sweep.plan.MAX_CASES (not imported here, so --help stays instant)
@click.option("--max-cases", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Refuse a grid of more cases than this (each runs for minutes).")  # fmt: skip
@click.option(
    "--executor",
    type=click.Choice(["local", "slurm"]),
    default="local",
    show_default=True,
    help="Where the cases run: here one by one, or Slurm arrays.",
)
@slurm_flags
def sweep(
    config: str,
    out: str | None,
    force: bool,
    retry_failed: bool,
    dry_run: bool,
    region: str | None,
    pue: float | None,
    quiet: bool,
    max_cases: int,
    executor: str = "local",
    **slurm: Any,
) -> None:
    """Run every case of a sweep CONFIG (lists expand into a grid), each in its own process.

    model, precision, compile, device and any workload field may be lists; `cases:` lists
    sub-grids for grids that are not full products; `agent:` turns one multi-turn request
    into one case per turn; `slurm:` holds --executor slurm's settings (examples:
    configs/sweep-*.yaml). Complete cases in the results folder are skipped; a case that
    fails is recorded as a failed row and the others go on. Exit 0 when every case is done,
    1 after a one-line summary when a case failed or a trial was degraded, 2 for bad input.
    """
    from tokenwatt.cli.console import warn
    from tokenwatt.errors import SweepIncomplete
    from tokenwatt.sweep.plan import load_sweep, schedule_of
    from tokenwatt.sweep.run import failure_summary, run_sweep
    from tokenwatt.sweep.slurm_options import slurm_options

    data, cases = load_sweep(config, out, region, pue, max_cases=max_cases, on_note=warn)
    slurm["sbatch"] = list(slurm["sbatch"]) or None  # no --sbatch: the file's list
    opts = slurm_options(data.get("slurm"), slurm, where=config)
    runner = None
    if executor == "slurm":
        from tokenwatt.sweep.slurm import SlurmExecutor

        runner = SlurmExecutor(opts, confirm_cancel=lambda: click.confirm(
            "\ncancel the submitted Slurm jobs?", default=True, err=True))  # fmt: skip
    if dry_run:
        _dry_run(data, cases, runner, force, retry_failed)
        return
    text = Path(config).read_text(encoding="utf-8")  # read_yaml checked its size and encoding
    rounds = schedule_of(data).rounds  # the bar counts every run of every round
    with sweep_progress(cases * rounds, disabled=quiet) as on_event:
        outcome = run_sweep(
            data, cases, executor=runner, force=force, retry_failed=retry_failed,
            on_event=on_event, config_text=text,
        )  # fmt: skip
    click.echo(
        f"sweep {outcome.out}: {len(outcome.planned)} cases, "
        f"{len(outcome.planned) - len(outcome.failed)} complete "
        f"({len(outcome.skipped)} skipped as already done), {len(outcome.failed)} failed"
    )
    if line := failure_summary(outcome):
        raise SweepIncomplete(line)


def _dry_run(data: dict[str, Any], cases: list[Any], runner: Any, force: bool,
             retry_failed: bool) -> None:  # fmt: skip
    """The cases and what would run; for Slurm, the preflight and the arrays it would submit."""
    from tokenwatt.cli.console import console
    from tokenwatt.results.folder import case_states, check_out_dir
    from tokenwatt.sweep.plan import pending

    out = check_out_dir(data["out"])  # a damaged folder: one line
    states = case_states(out)
    todo = pending(cases, states, force, retry_failed)
    if runner is not None:  # what Slurm would refuse, refused before anything is listed
        runner.preflight(todo, out)
    ids = {c.case_id for c in todo}
    for c in cases:
        state = "run" if c.case_id in ids else states.get(c.case_id, "")
        console.print(f"{c.case_id}  {state:8}  {c.label}")
    console.print(f"{len(cases)} cases, {len(todo)} to run, folder {data.get('out')}")
    if runner is None:
        return
    from tokenwatt.sweep.slurm import describe_arrays

    for line in describe_arrays(todo, runner.opts, runner.offer, out):
        console.print(line, highlight=False, soft_wrap=True)
    console.print("Slurm accepts every array (sbatch --test-only); nothing was submitted",
                  highlight=False)  # fmt: skip


@contextmanager
def sweep_progress(cases: list[Any], disabled: bool = False) -> Iterator[Any]:
    """One bar over the grid, one over the trials of the case in flight."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tokenwatt.cli.console import err_console

    if disabled:
        yield None
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err_console, transient=True) as progress:
        grid = progress.add_task("cases", total=len(cases))
        trials = progress.add_task("trials", total=None, visible=False)

        def on_event(case: Any, event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "start":
                progress.update(grid, description=f"cases: {case.label}")
                progress.reset(
                    trials,
                    total=case.config.measure.repeats,
                    visible=True,
                    description="  starting",
                )
            elif kind == "phase" and event.get("phase") == "warning":
                progress.console.print(f"[yellow]warning[/yellow] {case.label}: {event['text']}",
                                       highlight=False)  # fmt: skip
            elif kind == "phase":
                progress.update(trials, description=f"  {event.get('text', '')}")
            elif kind == "trial":
                progress.update(
                    trials, completed=event["done"], total=event["total"], description="  trials"
                )
            elif kind in ("done", "failed"):
                progress.advance(grid)
                progress.update(trials, visible=False)

        yield on_event
