"""The `run` command: one config, measured and appended to its results folder."""

from __future__ import annotations

from typing import Any

import click

from tokenwatt.cli.options import given, parse_set, run_options
from tokenwatt.errors import TrialsDegraded


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@run_options
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Set any config field by its dotted path, e.g. --set measure.cpu_tdp_w=95 "
              "(repeatable).")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or table.")
def run(config: str | None, settings: tuple[str, ...], quiet: bool, **overrides: Any) -> None:
    """Measure one CONFIG (default: the embedded quickstart) and append its results to --out.

    Flags override the file; every field of the config has a flag (its path in brackets).
    The defaults shown are the embedded quickstart's; with a CONFIG, its values are.
    Exit 1 when any trial failed or was degraded (after the outcome and a line saying why).
    """
    from tokenwatt.cli.console import print_outcome, run_progress, trial_failures
    from tokenwatt.config import load_config

    flags = given(click.get_current_context(), overrides)
    cfg = load_config(config, **{**parse_set(settings), **flags})
    from tokenwatt.runner.quiet import quiet_libraries

    quiet_libraries(whole_process=True)
    from tokenwatt.runner.run import run_config

    with run_progress(cfg, disabled=quiet) as (on_trial, on_phase):
        outcome = run_config(cfg, on_trial=on_trial, on_phase=on_phase)
    if not quiet:
        print_outcome(outcome)
    failures = trial_failures(outcome)
    if failures:  # as pytest with a failed test: the results stand, the exit status says so
        raise TrialsDegraded(failures)
