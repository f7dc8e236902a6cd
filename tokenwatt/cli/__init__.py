"""The command line: parse, call the library, print. No logic of its own.

One module per command family: run.py, sweep.py, analyze.py (compare, report), plan.py,
meters.py, floor.py, estimate.py, publish.py (validate, export); options.py builds `run`'s flags
from the config schema; console.py prints; tables.py prints tables whole at any width.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from tokenwatt._util.version import __version__
from tokenwatt.errors import Terminated, TokenwattError


class TokenwattGroup(click.Group):
    """Prints a user's mistake or a run fault as one line (exit 2 / 1); interruptions 130/143."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a bad flag value: one line too, not usage + error
            if type(e).__name__ == "NoArgsIsHelpError":
                raise
            where = e.ctx.command_path if e.ctx else "tokenwatt"
            click.echo(f"Error: {e.format_message()} See '{where} --help'.", err=True)
            ctx.exit(e.exit_code)
        except TokenwattError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo(f"Interrupted: {_saved(ctx)}", err=True)
            ctx.exit(130)
        except Terminated:
            click.echo(f"Terminated: {_saved(ctx)}", err=True)
            ctx.exit(143)


def _saved(ctx: click.Context) -> str:
    """What an interruption kept, and how to go on."""
    if ctx.invoked_subcommand == "sweep":
        return "complete cases are saved; rerun the same command to resume the sweep."
    return "finished trials are saved; rerun the same command to measure more."


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


@click.group(cls=TokenwattGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokenwatt")
def cli() -> None:
    """Measure joules per generated token of a PyTorch language model."""


def _register() -> None:
    from tokenwatt.cli import analyze, estimate, floor, meters, plan, publish, run, sweep

    for command in (run.run, sweep.sweep, analyze.compare, analyze.report, meters.meters,
                    plan.plan, floor.floor, estimate.estimate, publish.validate,
                    publish.export):  # fmt: skip
        cli.add_command(command)


_register()


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(prog_name="tokenwatt")
    finally:
        # Everything is on disk now. Python restores the default handlers while it shuts down,
        # so a signal then would make a finished run look killed (-2/-15): ignore it instead.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
