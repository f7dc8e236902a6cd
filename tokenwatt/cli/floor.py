"""`tokenwatt floor`: the physical floor of a model on a hardware profile, without running it."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click

from tokenwatt.registry.precisions import PRECISION_NAMES
from tokenwatt.report.format import compact, fmt


@click.command()
@click.option(
    "--model",
    default="preset:llama-3.1-8b",
    show_default=True,
    help="preset:NAME or a local checkpoint directory (only its config is read).",
)
@click.option(
    "--precision",
    default="bf16",
    show_default=True,
    type=click.Choice(PRECISION_NAMES),
    help="Number format of the weights.",
)
@click.option(
    "--batch-size", default=1, show_default=True, type=int, help="Sequences decoded together."
)
@click.option(
    "--prompt-tokens",
    default=128,
    show_default=True,
    type=int,
    help="Context in the KV cache when decoding starts.",
)
@click.option(
    "--new-tokens",
    default=128,
    show_default=True,
    type=int,
    help="Tokens generated per sequence (the mean context is prompt + new / 2).",
)
@click.option(
    "--hardware",
    "hardware",
    multiple=True,
    help="Hardware profile (repeatable; default: every profile). Profiles: "
    "tokenwatt/data/hardware.yaml and TOKENWATT_HARDWARE files.",
)
@click.option(
    "--experts-touched",
    type=float,
    help="MoE: experts a decode step reads per layer, e.g. a run's "
    "routing_decode_experts_touched_mean (default: uniform-routing expectation).",
)
@click.option("--trust-remote-code", is_flag=True, help="Allow a checkpoint's own config code.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV (every column).")
def floor(model: str, precision: str, batch_size: int, prompt_tokens: int, new_tokens: int,
          hardware: tuple[str, ...], experts_touched: float | None, trust_remote_code: bool,
          as_csv: bool) -> None:  # fmt: skip
    """The least energy and time a generated token can cost: bytes/token, J/token, the best
    tokens/s and which term dominates, for a model, precision, batch, context and hardware.

    Nothing runs: the model is built on PyTorch's meta device (shapes only; a preset's are
    stored, data/preset_shapes.json) and its weights
    priced at the format's storage size. The energy floor counts memory traffic at the
    profile's lower-bound pJ/bit; compute energy is counted only where a profile gives a
    sourced arithmetic-only pJ/FLOP (none of the built-in ones do), so the table says which.
    """
    from tokenwatt.analysis.floor import (
        floor_table,
        hardware_profile,
        inventory_info,
        load_hardware,
    )
    from tokenwatt.errors import UserError
    from tokenwatt.runner.quiet import quiet_libraries

    quiet_libraries(whole_process=True)
    from tokenwatt.models.inventory import model_shapes

    profiles = [hardware_profile(h) for h in hardware] or list(load_hardware().values())
    if experts_touched is not None and experts_touched <= 0:
        raise UserError(f"--experts-touched must be positive (got {experts_touched})")
    inventory, config = model_shapes(model, trust_remote_code)
    info = inventory_info(inventory, precision)
    if experts_touched is not None:
        info["experts_touched_per_layer"] = experts_touched
    rows = floor_table(model, config, info, precision, batch_size, prompt_tokens, new_tokens,
                       profiles)  # fmt: skip
    if as_csv:
        _write_csv(rows)
    else:
        _print(rows)


def _write_csv(rows: list[dict[str, Any]]) -> None:
    from tokenwatt.analysis.floor import TABLE_COLUMNS

    w = csv.DictWriter(sys.stdout, fieldnames=list(TABLE_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


# (column, header): narrow enough for an 80-column terminal; --csv has every column in full.
CELLS = [("hardware", "profile"), ("floor_j_per_token", "J/token"),
         ("memory_j_per_token", "memory"), ("compute_j_per_token", "compute"),
         ("bytes_per_token", "B/token"), ("max_tokens_per_s", "tok/s"),
         ("time_bound", "bound"), ("energy_dominant", "dominant")]  # fmt: skip


def _print(rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.table import Table

    from tokenwatt.cli.console import console
    from tokenwatt.cli.tables import print_table

    r0 = rows[0]
    t = Table(title=f"decode floor: {r0['model']} {r0['precision']}, batch {r0['batch_size']}, "
              f"{r0['prompt_tokens']} + {r0['new_tokens']} tokens", box=box.SIMPLE_HEAD,
              title_justify="left", pad_edge=False, collapse_padding=True)  # fmt: skip
    for i, (_, head) in enumerate(CELLS):
        t.add_column(head, justify="left" if i == 0 or i >= 6 else "right", no_wrap=True)
    for r in rows:
        t.add_row(*[_cell(r, key) for key, _ in CELLS])
    print_table(t, console)
    notes = [f"J per generated token; tok/s: the most the whole batch can generate per second. "
             f"compute: {r0['compute_energy_basis']}" + (" (n/c)." if "not counted" in
             r0["compute_energy_basis"] else "."),
             "memory: at each profile's lower-bound pJ/bit; weights read once per step (shared "
             "by the batch) at the format's storage size, the untied input embedding left out, "
             "plus each sequence's KV cache at the mean context."]  # fmt: skip
    if r0["experts_basis"]:
        notes.append(f"MoE: {fmt(r0['experts_touched_per_layer'])} experts read per layer and "
                     f"step ({r0['experts_basis']}).")  # fmt: skip
    if r0["native_format_floor_j_per_token"] is not None:
        notes.append("Emulated format: native_format_floor_j_per_token (--csv) is the floor if "
                     "the format ran natively.")  # fmt: skip
    console.print("\n".join(notes), highlight=False)


def _cell(r: dict[str, Any], key: str) -> str:
    if key == "compute_j_per_token" and "not counted" in str(r["compute_energy_basis"]):
        return "n/c"
    v = r[key]
    return compact(v) if isinstance(v, float) else str(v)
