"""`tokenwatt plan`: racks, megawatts and CO2 of a deployment, from measured results or, without
results, from the energy model's estimate (labelled ESTIMATE)."""

from __future__ import annotations

from typing import Any

import click

from tokenwatt.errors import TokenwattError, UserError
from tokenwatt.registry.precisions import PRECISION_NAMES
from tokenwatt.report.format import compact, finite


@click.command()
@click.argument("results", nargs=-1, type=click.Path())
@click.option(
    "--region",
    help="Named profile (northern-virginia, frankfurt, iceland-norway, west-texas, ...), ISO3 "
    "country, USA/<state>, CAN/<province> or cloud region. Default: every named profile.",
)
@click.option("--tokens-per-s", type=float, help="Target generated tokens/s of the deployment.")
@click.option(
    "--load-factor",
    type=float,
    default=1.0,
    show_default=True,
    help="Average share of the target throughput served over a year (annual MWh and CO2).",
)
@click.option("--pue", type=float,
              help="Facility PUE. Default: the region profile's typical PUE, else 1.0 (the same "
              "rule as run's carbon.pue).")  # fmt: skip
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the table.")
@click.option(
    "--model",
    help="Without RESULTS: plan from the energy model's estimate for this "
    "preset:NAME or checkpoint (with --hardware; labelled ESTIMATE).",
)
@click.option("--hardware", help="Without RESULTS: the hardware profile (e.g. h100-sxm).")
@click.option(
    "--precision",
    default="bf16",
    show_default=True,
    type=click.Choice(PRECISION_NAMES),
    help="Without RESULTS: the number format of the weights.",
)
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=int,
    help="Without RESULTS: sequences decoded together per deployment.",
)
@click.option(
    "--prompt-tokens",
    default=512,
    show_default=True,
    type=int,
    help="Without RESULTS: prompt tokens per request.",
)
@click.option(
    "--new-tokens",
    default=256,
    show_default=True,
    type=int,
    help="Without RESULTS: tokens generated per request.",
)
@click.option(
    "--gpus",
    default=1,
    show_default=True,
    type=int,
    help="Without RESULTS: boards each model copy is split over (tensor parallel).",
)
@click.pass_context
def plan(
    ctx: click.Context,
    results: tuple[str, ...],
    region: str | None,
    tokens_per_s: float | None,
    load_factor: float,
    pue: float | None,
    csv_path: str | None,
    model: str | None,
    hardware: str | None,
    precision: str,
    batch_size: int,
    prompt_tokens: int,
    new_tokens: int,
    gpus: int,
) -> None:
    """What measured J/token means for a deployment: tokens/s per kW and per rack, MW of
    facility power for --tokens-per-s, annual MWh and tonnes of CO2, per precision and region.

    RESULTS are tokenwatt results folders (their summary.csv is read) or CSV files. Without
    RESULTS, --model and --hardware plan from the energy model's estimate (`tokenwatt
    estimate`), labelled ESTIMATE. Exit 1 when no row is usable (every case failed, or no run
    is complete).
    """
    workload = (model, hardware, precision, batch_size, prompt_tokens, new_tokens, gpus)
    try:
        if results and model:
            raise UserError("plan: give RESULTS folders or --model (an estimate), not both")
        if results:
            table = _plan(results, region, tokens_per_s, load_factor, pue)
        else:
            table = _estimated_plan(workload, region, tokens_per_s, load_factor, pue)
        if csv_path:
            _write_csv(table, csv_path)
    except TokenwattError as e:  # also when this command is invoked outside the group
        click.echo(f"Error: {e}", err=True)
        ctx.exit(e.exit_code)
    _print(table, tokens_per_s, csv_path)


def _plan(
    results: tuple[str, ...],
    region: str | None,
    tokens_per_s: float | None,
    load_factor: float,
    pue: float | None,
) -> Any:
    from tokenwatt.analysis.capacity import plan_table
    from tokenwatt.report.usable import no_usable_row, usable_summaries

    summaries = usable_summaries(results)
    if summaries is None:  # every case failed or no run finished: exit 1, not a bad-input 2
        raise no_usable_row("plan", results)
    return plan_table(summaries, region, tokens_per_s, load_factor, pue)


def _estimated_plan(workload: tuple[Any, ...], region: str | None, tokens_per_s: float | None,
                    load_factor: float, pue: float | None) -> Any:  # fmt: skip
    """The plan of one estimated case: the energy model's J/token (steady state, GPU boards)
    in place of a measured one, with the interval's ends in j_per_token_low / _high."""
    import pandas as pd

    from tokenwatt.analysis.capacity import plan_table
    from tokenwatt.cli.estimate import estimate_rows

    model, hardware, precision, batch, prompt, new, gpus = workload
    if not model or not hardware:
        raise UserError("plan: give RESULTS folders, or --model and --hardware to plan from "
                        "the energy model's estimate")  # fmt: skip
    est = estimate_rows(model, [hardware], [precision], batch, prompt, new, gpus)[0]
    case = pd.DataFrame([{
        "model": model, "precision": precision, "device_name": f"{gpus}x {est['hardware']}",
        "batch_size": batch, "prompt_tokens": prompt, "new_tokens": new,
        "energy_scope": est["energy_scope"], "measured": False,
        "total_j_per_token_mean": est["j_per_token"],
    }])  # fmt: skip
    table = plan_table(case, region, tokens_per_s, load_factor, pue)
    table.insert(1, "energy_source", est["energy_source"])
    for k in ("j_per_token_low", "j_per_token_high", "tokens_per_s", "caveats"):
        table[f"estimate_{k}"] = est[k]
    table.attrs["estimate"] = est
    return table


def _write_csv(table: Any, path: str) -> None:
    try:
        table.to_csv(path, index=False)
    except OSError as e:
        raise UserError(
            f"--csv: cannot write {path!r} ({e.strerror}); choose another path"
        ) from None


# (column, header). The first table holds what does not depend on the region, the second what
# does; a *_low / *_min cell shows the "low-high" range with its partner column.
CASE_CELLS = [("model", "Model"), ("precision", "Precision"), ("batch_size", "Batch")]
CASE_NUMBERS = [("j_per_token", "J/token"), ("relative_j_per_token", "vs {ref}"),
                ("tokens_per_s_per_kw", "tok/s per kW IT")]  # fmt: skip
REGION_NUMBERS = [("tokens_per_s_per_rack_low", "tok/s/rack"), ("pue", "PUE"),
                  ("g_co2_per_1k_tokens", "gCO2/1k")]  # fmt: skip
TARGET_NUMBERS = [("facility_mw", "MW"), ("racks_min", "racks"), ("annual_mwh", "MWh/y"),
                  ("annual_t_co2", "tCO2/y")]  # fmt: skip
QUEUE = [("grid_queue_years_low", "grid y")]
PAIRS = {"tokens_per_s_per_rack_low": "tokens_per_s_per_rack_high", "racks_min": "racks_max",
         "grid_queue_years_low": "grid_queue_years_high"}  # fmt: skip


def _print(table: Any, tokens_per_s: float | None, csv_path: str | None) -> None:
    from rich.console import Console

    from tokenwatt.cli.tables import print_table

    case_cells = [c for c in CASE_CELLS if c[0] in table]
    case_keys = [k for k, _ in case_cells]
    cases = table.drop_duplicates(case_keys) if case_keys else table.head(1)
    numbers = [(k, h.format(ref=reference_name(table))) for k, h in CASE_NUMBERS
               if k != "relative_j_per_token" or len(cases) > 1]  # fmt: skip
    console = Console()
    est = table.attrs.get("estimate")
    title = ("ESTIMATE (estimate-model, not measured): " + f"{est['boards']}x {est['hardware']}"
             if est else "Measured cases")  # fmt: skip
    print_table(_table(title, cases, case_cells + numbers), console)
    target = TARGET_NUMBERS if tokens_per_s else []
    varying = [c for c in case_cells if table[c[0]].nunique(dropna=False) > 1]
    cells = [*varying, *REGION_NUMBERS, *target, *QUEUE]
    # One table per region keeps each one narrow enough for an 80-column terminal.
    for region, rows in table.groupby("region", sort=False):
        title = (("ESTIMATE, region " if est else "Region ") + str(region)
                 + (f", for {tokens_per_s:,.0f} tokens/s" if tokens_per_s else ""))  # fmt: skip
        print_table(_table(title, rows, cells), console)
    console.print(_footnote(table, tokens_per_s, csv_path))


def reference_name(table: Any) -> str:
    """What the relative column is relative to: the reference precision, when every group
    has the same one; otherwise "ref" (the footnote names each)."""
    refs = sorted({str(r) for r in table.get("relative_to", [])}) if "relative_to" in table else []
    if not refs:
        return "bf16"
    return refs[0] if len(refs) == 1 else "ref"


def _table(title: str, df: Any, cells: list[tuple[str, str]]) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        collapse_padding=True,
    )
    for _, header in cells:
        t.add_column(header, no_wrap=True)
    for rec in df.to_dict("records"):
        t.add_row(*[_cell(rec, k) for k, _ in cells])
    return t


def _cell(rec: dict[str, Any], key: str) -> str:
    v = rec.get(key)
    if key in PAIRS and finite(v):
        low, high = compact(v, 2), compact(rec[PAIRS[key]], 2)
        return low if low == high else f"{low}-{high}"
    return compact(v) if isinstance(v, float) else str(v)


def _estimate_note(table: Any, est: dict[str, Any]) -> str:
    """What the ESTIMATE rests on, and the interval carried through to MW."""
    low, high = (
        est["j_per_token_low"] / est["j_per_token"],
        est["j_per_token_high"] / est["j_per_token"],
    )
    line = (f"ESTIMATE: J/token from the energy model (estimate-model, docs/energy-model.md), "
            f"not a measurement; interval {compact(est['j_per_token_low'], 2)}-"
            f"{compact(est['j_per_token_high'], 2)} J/token (held-out errors), so every MW, "
            f"rack and tonne above scales by x{low:.2f}-x{high:.2f}; one copy of the model "
            f"serves about {compact(est['tokens_per_s'])} tokens/s at batch "
            f"{est['batch_size']}.")  # fmt: skip
    if est["caveats"]:
        line += " Caveats: " + est["caveats"] + "."
    from tokenwatt.analysis.energy_model import stored_fit

    fit = stored_fit()
    if fit.validation.get("release_rows"):
        line += (f" Calibrated on {fit.engine}; on a later release's rows it predicted "
                 f"x{fit.validation['release_median_ratio_factor']} the measured figure "
                 "(docs/energy-model.md).")  # fmt: skip
    return line


def _footnote(table: Any, tokens_per_s: float | None, csv_path: str | None) -> str:
    scopes = ", ".join(sorted({str(s) for s in table.get("energy_scope", [])})) or "unknown"
    lines = [
        f"J/token: prefill + decode energy per generated token (scope: {scopes}); IT power "
        "leaves out what the meter does not see, so racks and MW are lower bounds.",
    ]
    if reference_name(table) == "ref":
        lines.append("vs ref: J/token over the same model and batch at bf16, or at the first "
                     "precision measured where a group has no bf16 case.")  # fmt: skip
    bases = sorted({str(b) for b in table.get("carbon_basis", []) if b})
    if len(bases) > 1:
        lines.append(f"Carbon intensities on different bases ({', '.join(bases)}): lifecycle "
                     "figures count upstream emissions, direct ones only combustion; compare "
                     "regions of one basis.")  # fmt: skip
    elif bases:
        lines.append(f"Carbon intensity basis: {bases[0]}.")
    est = table.attrs.get("estimate")
    if est:
        lines.append(_estimate_note(table, est))
    elif "measured" in table and not table["measured"].fillna(False).astype(bool).all():
        lines.append("Some J/token figures are estimates (measured=False), not measurements.")
    if not tokens_per_s:
        lines.append("Give --tokens-per-s for facility MW, racks and annual MWh / t CO2.")
    if csv_path:
        lines.append(f"Table written to {csv_path}.")
    return "\n".join(lines)
