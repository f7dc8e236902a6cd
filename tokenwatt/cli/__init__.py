"""The command line: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from tokenwatt import __version__
from tokenwatt.errors import UserError

RUN_OPTIONS = [
    click.option("--name", help="Name recorded with the results."),
    click.option("--model", help="preset:NAME, a local checkpoint directory, or a hub id."),
    click.option(
        "--precision",
        help="fp32, bf16, fp16, int8-weight, int8-dynamic, int4-weight, "
        "fp8, mxfp4-emulated, nvfp4-emulated.",
    ),  # fmt: skip
    click.option(
        "--compile/--no-compile",
        "compile",
        default=None,
        help="Static KV cache + torch.compile of the decode step.",
    ),  # fmt: skip
    click.option("--device", help="auto, cpu, cuda or cuda:N."),
    click.option("--batch-size", type=int, help="Sequences decoded together."),
    click.option("--prompt-tokens", type=int, help="Prompt length in tokens."),
    click.option("--new-tokens", type=int, help="Tokens generated per sequence (EOS ignored)."),
    click.option("--seed", type=int, help="Seed for random weights and prompts."),
    click.option("--prompts-file", help="Text file of prompts (needs a model with a tokenizer)."),
    click.option("--meter", help="auto, nvml, rapl or estimate."),
    click.option("--warmup", type=int, help="Unmeasured warm-up generations."),
    click.option("--repeats", type=int, help="Measured trials."),
    click.option("--min-seconds", type=float, help="Minimum length of one trial."),
    click.option("--idle-seconds", type=float, help="Idle baseline length before trials."),
    click.option("--region", help="Carbon region (ISO3 country, grid region or named profile)."),
    click.option("--pue", type=float, help="Power usage effectiveness of the facility (>= 1)."),
    click.option(
        "--trust-remote-code",
        is_flag=True,
        default=None,
        help="Allow a checkpoint's own Python code to run (off by default).",
    ),  # fmt: skip
    click.option(
        "--allow-pickle",
        is_flag=True,
        default=None,
        help="Allow pickle (*.bin) weights, which can run code when loaded.",
    ),  # fmt: skip
    click.option("--out", help="Results folder (rows are appended, never truncated)."),
]


def run_options(f: Any) -> Any:
    for opt in reversed(RUN_OPTIONS):
        f = opt(f)
    return f


class TokenwattGroup(click.Group):
    """Prints a user's mistake as one line and exits 2; interruptions exit 130/143."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a bad flag value: one line too, not usage + error
            if type(e).__name__ == "NoArgsIsHelpError":
                raise
            where = e.ctx.command_path if e.ctx else "tokenwatt"
            click.echo(f"Error: {e.format_message()} See '{where} --help'.", err=True)
            ctx.exit(e.exit_code)
        except UserError as e:
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


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so cleanup runs like for Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


@click.group(cls=TokenwattGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokenwatt")
def cli() -> None:
    """Measure joules per generated token of a PyTorch language model."""


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@run_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or table.")
def run(config: str | None, quiet: bool, **overrides: Any) -> None:
    """Measure one config (default: the embedded quickstart) and append its results to --out."""
    from tokenwatt.cli.console import print_outcome, trial_progress
    from tokenwatt.config import load_config

    cfg = load_config(config, **overrides)
    _quiet_libraries()
    from tokenwatt.runner.run import run_config

    with trial_progress(cfg, disabled=quiet) as on_trial:
        outcome = run_config(cfg, on_trial=on_trial)
    if not quiet:
        print_outcome(outcome)


def _quiet_libraries() -> None:
    """transformers and torchao log warnings that say nothing about the measurement."""
    import logging
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("torch.utils._pytree", "torchao", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


from tokenwatt.cli.meters import meters  # noqa: E402
from tokenwatt.cli.plan import plan  # noqa: E402
from tokenwatt.cli.sweep import compare, report, sweep  # noqa: E402

for _command in (sweep, compare, report, meters, plan):
    cli.add_command(_command)


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
