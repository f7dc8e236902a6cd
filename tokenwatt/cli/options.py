"""The options of `tokenwatt run`, built from the config schema's one flag table.

Each flag in `tokenwatt.config.FLAGS` becomes a click option whose type, help and shown default
come from the schema, so `--help` and the YAML reference cannot drift apart. Options carry the
schema's defaults for `--help`, and `given()` keeps only what the user typed, so an option left
out never overrides the config file.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable
from typing import Any

import click

from tokenwatt.config import ENGINES, EXPERTS, FIDELITY_REFERENCES, FLAGS, METERS, leaf_fields
from tokenwatt.registry.precisions import PRECISION_CHOICES

DEVICES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1")


class FieldChoice(click.Choice):
    """A choice that fails like the config does: the field, the value, the choices, a hint."""

    def __init__(self, choices: tuple[str, ...], field: str) -> None:
        super().__init__(choices)
        self.field = field

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value in self.choices:
            return value
        near = difflib.get_close_matches(str(value), list(self.choices), n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        self.fail(f"{self.field}: unknown {value!r}{hint}; choose one of "
                  f"{', '.join(map(str, self.choices))}", param, ctx)  # fmt: skip


class DeviceType(click.ParamType):
    """auto, cpu, cuda or cuda:N; completion lists the usual ones."""

    name = "device"

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return "[auto|cpu|cuda|cuda:N]"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from tokenwatt.config import DEVICE_RE

        if DEVICE_RE.match(str(value)):
            return value
        self.fail(f"device: unknown {value!r}; use auto, cpu, cuda or cuda:N", param, ctx)

    def shell_complete(self, ctx: Any, param: Any, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(d) for d in DEVICES if d.startswith(incomplete)]


CHOICES: dict[str, click.ParamType] = {
    "precision": FieldChoice(PRECISION_CHOICES, "precision"),
    "measure.meter": FieldChoice(METERS, "measure.meter"),
    "experts": FieldChoice(EXPERTS, "experts"),
    "engine": FieldChoice(ENGINES, "engine"),
    "fidelity.reference": FieldChoice(FIDELITY_REFERENCES, "fidelity.reference"),
    "device": DeviceType(),
}


# list fields given by repeating the flag (click's convention), one value each; comma-separated
# values are accepted too (the field's validator splits them)
REPEATABLE = {"measure.dcgm_url"}


def _base_type(annotation: Any) -> Any:
    """int, float, bool or str for `int`, `float | None`, `list[str] | None`, ..."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    ann = args[0] if args and typing.get_origin(annotation) is not typing.Annotated else annotation
    if typing.get_origin(ann) is typing.Annotated:  # StrictInt = Annotated[int, Strict()]
        ann = typing.get_args(ann)[0]
    return ann if ann in (int, float, bool, str) else str


def field_option(path: str, flag: str, info: Any, default: Any) -> Callable[[Any], Any]:
    """One click option for the config field at `path`, showing `default` in --help."""
    kind = _base_type(info.annotation)
    dest = flag.replace("-", "_")
    help_text = f"{info.description or path} [{path}]"
    shown = default is not None
    if isinstance(default, list):
        default = ",".join(map(str, default))
    if kind is bool:
        return click.option(f"--{flag}/--no-{flag}", dest, default=default, help=help_text,
                            show_default=shown)  # fmt: skip
    ptype = CHOICES.get(path) or {int: int, float: float}.get(kind, str)
    if path in REPEATABLE:
        return click.option(f"--{flag}", dest, type=ptype, multiple=True, help=help_text)
    return click.option(f"--{flag}", dest, type=ptype, default=default, help=help_text,
                        show_default=shown)  # fmt: skip


def quickstart_defaults() -> dict[str, Any]:
    """Dotted path -> value in the embedded quickstart (what `tokenwatt run` alone runs), so
    --help shows what a flag left out means there (out: results/quickstart, not results/run)."""
    from tokenwatt.config import config_to_dict, load_config

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    return flat(config_to_dict(load_config(None)))


def given(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options the user set (on the command line or through the environment)."""
    from click.core import ParameterSource

    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) in typed}


def run_options(f: Any) -> Any:
    """Decorate a command with one option per flag of the table, in the table's order."""
    fields, defaults = leaf_fields(), quickstart_defaults()
    for path, flag in reversed(list(FLAGS.items())):
        if flag is not None:
            f = field_option(path, flag, fields[path], defaults.get(path))(f)
    return f


def parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    """`--set measure.cpu_tdp_w=95` -> {"measure.cpu_tdp_w": 95} (values read as YAML scalars)."""
    import yaml

    from tokenwatt.errors import ConfigError

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: {item!r} is not KEY=VALUE, e.g. measure.cpu_tdp_w=95")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out
