"""`tokenwatt estimate`: predicted J/token, tokens/s and board power on a hardware profile, from
the energy model (analysis/energy_model.py), with its interval; nothing runs."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click

from tokenwatt.registry.precisions import PRECISION_NAMES
from tokenwatt.report.format import compact

COMPARE_HARDWARE = ("h100-sxm", "h200-sxm", "b200")
COMPARE_PRECISIONS = ("bf16", "fp8", "mxfp4-emulated")


def estimate_rows(model: str, hardware: list[str], precisions: list[str], batch: int,
                  prompt_tokens: int, new_tokens: int, gpus: int,
                  trust_remote_code: bool = False,
                  experts_touched: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One estimate row per (hardware profile, precision); the shapes come from the stored
    preset inventory when they can (no torch import)."""
    from tokenwatt.analysis.energy_model import estimate_row
    from tokenwatt.analysis.floor import hardware_profile, inventory_info
    from tokenwatt.errors import UserError
    from tokenwatt.models.inventory import model_shapes

    if experts_touched is not None and experts_touched <= 0:
        raise UserError(f"--experts-touched must be positive (got {experts_touched})")
    profiles = [hardware_profile(h) for h in hardware]
    inventory, config = _shapes(model, trust_remote_code, model_shapes)
    rows = []
    for precision in precisions:
        info = inventory_info(inventory, precision)
        if experts_touched is not None:
            info["experts_touched_per_layer"] = experts_touched
        for hw in profiles:
            rows.append(estimate_row(model, config, info, precision, batch, prompt_tokens,
                                     new_tokens, hw, boards=gpus))  # fmt: skip
    return rows


def _shapes(model: str, trust_remote_code: bool, model_shapes: Any) -> tuple[Any, Any]:
    if model.startswith("preset:"):
        return model_shapes(model, trust_remote_code)
    from tokenwatt.runner.quiet import quiet_libraries

    quiet_libraries(whole_process=True)
    return model_shapes(model, trust_remote_code)


@click.command()
@click.option(
    "--model",
    default="preset:llama-3.1-8b",
    show_default=True,
    help="preset:NAME or a local checkpoint directory (only its config is read).",
)
@click.option(
    "--hardware",
    "hardware",
    multiple=True,
    help="Hardware profile (repeatable). Default: h100-sxm; with --compare: "
    + ", ".join(COMPARE_HARDWARE)
    + ".",
)
@click.option(
    "--precision",
    "precision",
    multiple=True,
    type=click.Choice(PRECISION_NAMES),
    help="Number format of the weights (repeatable). Default: bf16; with --compare: "
    + ", ".join(COMPARE_PRECISIONS)
    + " (emulated formats priced as native FP4).",
)
@click.option(
    "--batch-size", default=1, show_default=True, type=int, help="Sequences decoded together."
)
@click.option(
    "--prompt-tokens", default=512, show_default=True, type=int, help="Prompt tokens per request."
)
@click.option(
    "--new-tokens", default=256, show_default=True, type=int, help="Tokens generated per request."
)
@click.option(
    "--gpus",
    default=1,
    show_default=True,
    type=int,
    help="Boards the model is split over (tensor parallel).",
)
@click.option(
    "--compare", is_flag=True, help="The same workload across hardware profiles and precisions."
)
@click.option(
    "--experts-touched",
    type=float,
    help="MoE: experts a decode step reads per layer (default: uniform routing).",
)
@click.option("--trust-remote-code", is_flag=True, help="Allow a checkpoint's own config code.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV (every column).")
def estimate(model: str, hardware: tuple[str, ...], precision: tuple[str, ...], batch_size: int,
             prompt_tokens: int, new_tokens: int, gpus: int, compare: bool,
             experts_touched: float | None, trust_remote_code: bool,
             as_csv: bool) -> None:  # fmt: skip
    """What a generated token will cost: predicted J/token (steady state, decode alone, and
    prefill per prompt token), tokens/s and average board power, with an interval sized from
    the model's held-out errors on published measurements. Labelled estimate-model: a
    prediction, never a measurement (docs/energy-model.md)."""
    hw = list(hardware) or list(COMPARE_HARDWARE if compare else ("h100-sxm",))
    precisions = list(precision) or list(COMPARE_PRECISIONS if compare else ("bf16",))
    rows = estimate_rows(model, hw, precisions, batch_size, prompt_tokens, new_tokens, gpus,
                         trust_remote_code, experts_touched)  # fmt: skip
    if as_csv:
        from tokenwatt.analysis.energy_model import ESTIMATE_COLUMNS

        w = csv.DictWriter(sys.stdout, fieldnames=list(ESTIMATE_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    else:
        _print(rows)


# (column, header): narrow enough for an 80-column terminal; --csv has every column in full.
CELLS = [("hardware", "profile"), ("precision", "precision"), ("j_per_token", "J/token"),
         ("j_per_token_low", "interval"), ("decode_j_per_token", "decode"),
         ("prefill_j_per_prompt_token", "prefill/ptok"), ("tokens_per_s", "tok/s"),
         ("board_power_w", "W/board")]  # fmt: skip


def _print(rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.table import Table

    from tokenwatt.analysis.energy_model import stored_fit
    from tokenwatt.cli.console import console
    from tokenwatt.cli.tables import print_table

    r0 = rows[0]
    fit = stored_fit()
    t = Table(title=f"ESTIMATE (estimate-model): {r0['model']} on {r0['boards']} board(s), "
              f"batch {r0['batch_size']}, {r0['prompt_tokens']} + {r0['new_tokens']} tokens",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
              collapse_padding=True)  # fmt: skip
    for i, (_, head) in enumerate(CELLS):
        t.add_column(head, justify="left" if i < 2 else "right", no_wrap=True)
    for r in rows:
        t.add_row(*[_cell(r, key) for key, _ in CELLS])
    print_table(t, console)
    v = fit.validation
    notes = [
        "J/token: predicted GPU-board energy per generated token (steady state: decode plus the "
        "prefill admitted meanwhile); decode: decode steps alone; prefill/ptok: per prompt "
        "token; tok/s: the whole deployment.",
        f"interval: x{fit.interval_low:.2f}-x{fit.interval_high:.2f}, the 5th-95th percentile "
        f"of held-out errors on {v.get('rows_modelled', '?')} published rows "
        f"({fit.source}); held-out median error x{v.get('heldout_median_ratio_factor', '?')}.",
    ]  # fmt: skip
    if v.get("release_rows"):
        notes.append(
            f"calibrated on {fit.engine}: on {v['release_rows']} rows of a later release "
            f"(ML.ENERGY v3, a newer vLLM) it predicted x{v['release_median_ratio_factor']} the "
            "measured figure, so a current engine likely does better (docs/energy-model.md)."
        )
    caveats = [c for r in rows for c in str(r["caveats"]).split("; ") if c]
    notes += [f"caveat: {c}." for c in dict.fromkeys(caveats)]
    notes.append("Not a measurement: measure with `tokenwatt run` (docs/energy-model.md).")
    console.print("\n".join(notes), highlight=False)


def _cell(r: dict[str, Any], key: str) -> str:
    if key == "j_per_token_low":
        return f"{compact(r['j_per_token_low'], 2)}-{compact(r['j_per_token_high'], 2)}"
    v = r[key]
    return compact(v) if isinstance(v, float) else str(v)
