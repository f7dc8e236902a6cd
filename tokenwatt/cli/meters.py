"""`tokenwatt meters`: what this machine can measure and how, with the fix for what is missing."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from tokenwatt.report.format import fmt


@click.command()
@click.option("--idle-seconds", default=1.0, show_default=True, type=click.FloatRange(0, 60),
              help="Seconds of idle power to measure on each GPU (0 to skip).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--dcgm-url",
    "dcgm_urls",
    multiple=True,
    metavar="URL",
    help="Report a GPU node's dcgm-exporter instead (repeatable): the boards it "
    "publishes, its collection interval, the fields present and missing.",
)
def meters(idle_seconds: float, as_json: bool, dcgm_urls: tuple[str, ...]) -> None:
    """Show the energy meters available here: GPUs, RAPL, the CPU estimate; or what a node's
    dcgm-exporter publishes (--dcgm-url)."""
    from tokenwatt.energy.probe import dcgm_report, meters_report

    report = [r for u in dcgm_urls for r in dcgm_report(u)] if dcgm_urls else \
        meters_report(idle_seconds)  # fmt: skip
    if as_json:
        click.echo(json.dumps([asdict(m) for m in report], indent=2, default=str))
        return
    for info in report:
        state = "available" if info.available else "NOT AVAILABLE"
        click.echo(f"{info.name}: {state}")
        for key, value in info.detail.items():
            click.echo(f"  {key}: {fmt(value)}")
        if info.fix:
            click.echo(f"  {'note' if info.available else 'fix'}: {info.fix}")
    if dcgm_urls:
        if not any(i.available for i in report):
            raise SystemExit(1)
        return
    if not any(i.available and i.name != "estimate" for i in report):
        click.echo("\nNo energy can be measured on this machine: tokenwatt will report the CPU "
                   "estimate, labelled as an estimate.")  # fmt: skip
