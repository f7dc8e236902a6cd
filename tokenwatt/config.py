"""The run config: schema, YAML loading, CLI overrides and one-line validation errors."""

from __future__ import annotations

import difflib
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from tokenwatt.errors import ConfigError
from tokenwatt.registry.precisions import PRECISION_CHOICES, REFERENCE_NAMES
from tokenwatt.registry.presets import PRESETS

METERS = ("auto", "nvml", "rapl", "estimate", "dcgm", "prometheus")
REMOTE_METERS = ("dcgm", "prometheus")  # boards read on their node, not through local NVML
ENGINES = ("transformers", "vllm", "openai")  # tokenwatt/engines/, one module each
EXPERTS = ("tokenwatt", "transformers")
DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
MAX_BOARDS = 64  # boards one case can hold (a node has up to 8-16; a few nodes at most)


# YAML's `true` is no batch size and its 'yes' no boolean: numbers and flags are taken as
# typed (a float field still takes an integer).
StrictFloat = Annotated[float, Strict()]
MAX_PATH = 4096  # PATH_MAX on Linux: longer paths fail in the OS with an unclear error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        items = v if isinstance(v, list) else [v]
        if any(isinstance(x, str) and "\x00" in x for x in items):
            raise ValueError("contains a NUL byte; remove it")
        return v


class Workload(_Strict):
    batch_size: StrictInt = Field(1, ge=1, le=65536, description="Sequences decoded together.")
    prompt_tokens: StrictInt = Field(
        128, ge=1, le=1_048_576, description="Prompt length in tokens."
    )
    new_tokens: StrictInt = Field(
        128, ge=2, le=1_048_576, description="Tokens generated per sequence (EOS ignored)."
    )
    seed: StrictInt = Field(  # torch seeds its generators with 64 bits
        0, ge=-(2**63), le=2**64 - 1, description="Seed for random weights and prompts."
    )
    prompts_file: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PATH,
        description="Text file of prompts, one per line (needs a model with a tokenizer; the "
        "openai engine sends its lines as text).",
    )
    requests: StrictInt | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="engine openai: requests per pass, batch_size of them in flight at once "
        "(default: 4 x batch_size; with request_rate: the arrivals of a pass, needed).",
    )
    request_rate: StrictFloat | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="engine openai: open loop, requests arrive at this many per second "
        "(Poisson; gamma with burstiness), each sent at its arrival; batch_size caps those in "
        "flight, as vLLM's --max-concurrency (default: closed loop, batch_size always in "
        "flight).",
    )
    burstiness: StrictFloat = Field(
        1.0,
        gt=0,
        le=1000,
        description="engine openai with request_rate: gamma shape of the times between "
        "arrivals (mean 1/request_rate), as vLLM's --burstiness: 1 Poisson, below 1 burstier, "
        "above 1 more regular.",
    )
    trace: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PATH,
        description="engine openai: JSONL trace replayed at its arrival times with its own "
        "lengths (timestamp in ms or timestamp_s, input_length, output_length per line; the "
        "README has the format); batch_size caps the requests in flight.",
    )

    def request_count(self) -> int:
        """Requests per pass of the closed loop and of request_rate (a trace has its lines)."""
        return self.requests if self.requests is not None else 4 * self.batch_size

    @model_validator(mode="after")
    def _requests_fill_the_batch(self) -> Workload:
        open_loop = self.request_rate is not None or self.trace is not None
        if not open_loop and self.requests is not None and self.requests < self.batch_size:
            raise ValueError(
                f"workload.requests ({self.requests}) is fewer than batch_size "
                f"({self.batch_size}) requests in flight; raise --requests"
            )
        return self

    @model_validator(mode="after")
    def _one_load_shape(self) -> Workload:
        if self.request_rate is not None and self.trace is not None:
            raise ValueError("workload.request_rate and workload.trace are two load shapes; "
                             "drop --request-rate or --trace")  # fmt: skip
        if self.burstiness != 1.0 and self.request_rate is None:
            raise ValueError("workload.burstiness shapes request_rate's arrivals; add "
                             "--request-rate or drop --burstiness")  # fmt: skip
        if self.request_rate is not None and self.requests is None:
            raise ValueError("workload.request_rate needs workload.requests, the arrivals of "
                             "a pass; add --requests N")  # fmt: skip
        if self.trace is not None and self.requests is not None:
            raise ValueError("workload.requests: a trace sends one request per line; drop "
                             "--requests or --trace")  # fmt: skip
        if self.trace is not None and self.prompts_file is not None:
            raise ValueError("workload.prompts_file: a trace's requests have its input_length "
                             "(random token ids); drop --prompts-file or --trace")  # fmt: skip
        return self


class Measure(_Strict):
    meter: str = Field("auto", description="Which meter reads the energy.")
    gpus: list[str] | None = Field(
        None,
        description="GPU boards to measure (NVML indexes, UUIDs or PCI bus ids, comma-separated);"
        " default: the boards the model runs on.",
    )
    warmup: StrictInt = Field(1, ge=0, le=1000, description="Unmeasured warm-up generations.")
    repeats: StrictInt = Field(5, ge=1, le=10000, description="Measured trials.")
    min_seconds: StrictFloat = Field(
        5.0, ge=0, le=86400, description="Each trial repeats the generation this long at least."
    )
    idle_seconds: StrictFloat = Field(
        2.0, ge=0, le=3600, description="Idle baseline length before the trials (0: none)."
    )
    sample_interval_ms: StrictFloat = Field(
        20.0, gt=0, le=10000, description="Power trace sampling interval."
    )
    cooldown_s: StrictFloat | None = Field(
        None,
        ge=0,
        le=3600,
        description="Pause between trials (default: 2 s on a GPU, so each trial starts from a "
        "settled board; 0 on CPU).",
    )
    random_delay_s: StrictFloat = Field(
        0.0, ge=0, le=3600, description="Random extra pause (0..x s) before each trial."
    )
    cpu_tdp_w: StrictFloat | None = Field(
        None, gt=0, le=10000, description="CPU TDP the estimate uses (default: looked up)."
    )
    dcgm_url: list[str] | None = Field(
        None,
        description="meter dcgm: a GPU node's dcgm-exporter page, e.g. http://NODE:9400/metrics "
        "(repeat the flag, or comma-separate, for several nodes).",
    )
    dcgm_pod: str | None = Field(
        None, description="meter dcgm/prometheus: measure every board this Kubernetes pod holds."
    )
    dcgm_container: str | None = Field(
        None, description="meter dcgm/prometheus: only the boards of this container of the pod."
    )
    prometheus_url: str | None = Field(
        None, description="meter prometheus: the Prometheus server, e.g. http://PROM:9090."
    )
    prometheus_selector: str | None = Field(
        None,
        description='meter prometheus: the boards\' labels, e.g. \'{Hostname="n1",gpu="0"}\'.',
    )

    @field_validator("meter")
    @classmethod
    def _meter(cls, v: str) -> str:
        if v not in METERS:
            raise ValueError(f"unknown meter {short(v)}; choose one of {', '.join(METERS)}")
        return v

    @field_validator("dcgm_url", mode="before")
    @classmethod
    def _urls(cls, v: Any) -> Any:
        """`URL`, `URL1,URL2`, a list or a repeated flag (a tuple) -> a list of URLs."""
        if v is None:
            return None
        items = v.split(",") if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) \
            else [v]  # fmt: skip
        out = [str(x).strip() for x in items if str(x).strip()]
        if not out or not all(x.startswith(("http://", "https://")) for x in out):
            raise ValueError("give each exporter as http://NODE:9400/metrics")
        return out or None

    @model_validator(mode="after")
    def _remote(self) -> Measure:
        remote = {"dcgm_url": "dcgm", "prometheus_url": "prometheus",
                  "prometheus_selector": "prometheus"}  # fmt: skip
        for name, meter in remote.items():
            if getattr(self, name) is not None and self.meter != meter:
                flag = name.replace("_", "-")
                raise ValueError(f"measure.{name} is read by meter {meter} only; add --meter "
                                 f"{meter} or drop --{flag}")  # fmt: skip
        if self.meter == "dcgm" and not self.dcgm_url:
            raise ValueError("measure.meter dcgm reads a node's dcgm-exporter; add --dcgm-url "
                             "http://NODE:9400/metrics")  # fmt: skip
        if self.meter == "prometheus" and not (self.prometheus_url and self.prometheus_selector):
            raise ValueError("measure.meter prometheus needs --prometheus-url http://PROM:9090 "
                             "and --prometheus-selector '{Hostname=\"NODE\"}'")  # fmt: skip
        if (self.dcgm_pod or self.dcgm_container) and self.meter not in REMOTE_METERS:
            raise ValueError("measure.dcgm_pod and dcgm_container choose boards of meter dcgm or "
                             "prometheus; add --meter dcgm or drop them")  # fmt: skip
        return self

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        """`0,1`, `[0, 1]` or `["GPU-...", "00000000:3B:00.0"]` -> a list of strings."""
        if v is None:
            return None
        items = v.split(",") if isinstance(v, str) else v if isinstance(v, list) else [v]
        if any(isinstance(x, (bool, dict, list)) for x in items):
            raise ValueError("give board ids as 0,1 or a list of NVML indexes, UUIDs or bus ids")
        out = [str(x).strip() for x in items if str(x).strip()]
        if not out:
            raise ValueError("is empty; give at least one board, e.g. --gpus 0")
        return out


FIDELITY_REFERENCES = ("auto", *REFERENCE_NAMES)


class Fidelity(_Strict):
    enabled: StrictBool = Field(True, description="Measure output fidelity against a reference.")
    reference: str = Field(
        "auto", description="Reference precision (auto: fp32 on CPU, bf16 on GPU)."
    )
    sequences: StrictInt = Field(
        4, ge=1, le=4096, description="Sequences the fidelity check scores."
    )
    tokens: StrictInt = Field(64, ge=2, le=65536, description="Tokens scored per sequence.")

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str) -> str:
        if v not in FIDELITY_REFERENCES:
            raise ValueError(
                f"unknown reference {short(v)}; choose one of {', '.join(FIDELITY_REFERENCES)}"
            )
        return v


class Carbon(_Strict):
    region: str | None = Field(
        None, description="Carbon region (ISO3 country, grid region or named profile)."
    )
    pue: StrictFloat | None = Field(
        None,
        ge=1.0,
        le=5.0,
        description="Power usage effectiveness of the facility (default: the region profile's "
        "typical PUE, else 1.0; the same rule as tokenwatt plan).",
    )


class Server(_Strict):
    url: str | None = Field(
        None,
        max_length=2048,
        description="engine openai: the server's OpenAI-compatible base URL, e.g. "
        "http://127.0.0.1:8000/v1 (only its host is contacted).",
    )
    model: str | None = Field(
        None,
        max_length=1024,
        description="engine openai: the served model name (default: the "
        "first one the server's /v1/models lists).",
    )
    launch: str | None = Field(
        None,
        max_length=8192,
        description="engine openai: a command that starts the server; tokenwatt waits for its "
        "health endpoint, measures, and stops it (its log is kept in OUT).",
    )
    launch_timeout_s: StrictFloat = Field(
        600.0,
        gt=0,
        le=86400,
        description="engine openai: how long a launched server may take to become healthy.",
    )
    request_timeout_s: StrictFloat = Field(
        120.0,
        gt=0,
        le=86400,
        description="engine openai: a request with no streamed data for this long fails.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{short(v)} is not an http(s) URL; give the server's base URL, "
                             "e.g. http://127.0.0.1:8000/v1")  # fmt: skip
        try:
            parts.port  # noqa: B018 - raises on a port out of range
        except ValueError:
            raise ValueError(f"{short(v)} has an invalid port; use 1-65535") from None
        return v.strip().rstrip("/")


class RunConfig(_Strict):
    name: str = Field("run", description="Name recorded with the results.")
    engine: str = Field(
        "transformers",
        description="What generates the tokens: transformers (tokenwatt's own decode loop), "
        "vllm (vLLM's offline engine in process) or openai (a running OpenAI-compatible "
        "server at server.url).",
    )
    model: str = Field(
        "preset:tiny-llama",
        min_length=1,
        max_length=MAX_PATH,
        description="preset:NAME, a local checkpoint directory, or a hub id.",
    )
    precision: str = Field(
        "auto",
        description="Number format of the weights and the matmuls (auto: fp32 on CPU, bf16 on "
        "GPU; recorded as resolved). Engine openai: a label of what the server runs, which "
        "tokenwatt cannot see (auto: recorded as 'server').",
    )
    compile: StrictBool = Field(
        False,
        description="Static KV cache + torch.compile of the decode step (engine vllm: "
        "CUDA graphs and compilation, enforce_eager=false).",
    )
    experts: str = Field(
        "tokenwatt",
        description="MoE models: tokenwatt runs every precision's experts through one loop (so a "
        "bf16 baseline and a quantised case differ only in the format); transformers keeps "
        "transformers' own for dtype precisions.",
    )
    device: str = Field(
        "auto",
        description="Where the model runs (auto: a CUDA GPU if the process that runs the model "
        "sees one, else the CPU; rows record what it resolved to and why).",
    )
    gpus: list[str] | int | None = Field(
        None,
        description="GPU boards the case holds: N (the first N visible) or a list (CUDA "
        "indexes, UUIDs or PCI bus ids); with device cuda the model is placed across them "
        "(device_map auto); they are measured unless measure.gpus names others (default: the "
        "device's one board).",
    )
    trust_remote_code: StrictBool = Field(
        False, description="Allow a checkpoint's own Python code to run."
    )
    allow_pickle: StrictBool = Field(
        False, description="Allow pickle (*.bin) weights, which can run code when loaded."
    )
    workload: Workload = Workload()
    measure: Measure = Measure()
    fidelity: Fidelity = Fidelity()
    carbon: Carbon = Carbon()
    server: Server = Server()
    out: str = Field(
        "results/run",
        max_length=MAX_PATH,
        description="Results folder (rows are appended, never truncated).",
    )

    @field_validator("out")
    @classmethod
    def _out(cls, v: str) -> str:
        if not v.strip():  # '' would write into the current folder
            raise ValueError("is empty; give a folder for the results, e.g. results/run")
        return v

    @model_validator(mode="after")
    def _compile_needs_warmup(self) -> RunConfig:
        if self.compile and self.measure.warmup < 1:
            raise ValueError(
                "measure.warmup must be >= 1 with compile: true, or the first trial measures "
                "the compilation"
            )
        return self

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        if v not in ENGINES:
            hint = _nearest(v, ENGINES)
            raise ValueError(f"unknown engine {short(v)}{hint}; choose one of "
                             f"{', '.join(ENGINES)}")  # fmt: skip
        return v

    @model_validator(mode="after")
    def _engine_needs(self) -> RunConfig:
        s = self.server
        if self.engine == "openai" and not s.url:
            raise ValueError("engine openai needs server.url (--url http://HOST:PORT/v1), the "
                             "server to measure")  # fmt: skip
        if self.engine != "openai" and (s.url or s.launch):
            field = "server.url" if s.url else "server.launch"
            raise ValueError(f"{field} is for engine openai (engine is {self.engine}); add "
                             "--engine openai or drop it")  # fmt: skip
        w = self.workload
        for field, value in (("request_rate", w.request_rate), ("trace", w.trace),
                             ("requests", w.requests)):  # fmt: skip
            if self.engine != "openai" and value is not None:
                flag = FLAGS[f"workload.{field}"]
                raise ValueError(f"workload.{field} is for engine openai; drop --{flag} or add "
                                 "--engine openai")  # fmt: skip
        if self.engine == "openai" and self.compile:
            raise ValueError(
                "compile: a server compiles (or not) as it was started; drop --compile"
            )
        return self

    @field_validator("experts")
    @classmethod
    def _experts(cls, v: str) -> str:
        if v not in EXPERTS:
            raise ValueError(f"unknown experts implementation {v!r}; use {' or '.join(EXPERTS)}")
        return v

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        """2, "2" -> 2 boards; "0,1", [0, 1], ["GPU-..."] -> a list of board names."""
        if v is None:
            return None
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v.strip())
        if isinstance(v, int) and not isinstance(v, bool):
            if not 1 <= v <= MAX_BOARDS:
                raise ValueError(f"must be from 1 to {MAX_BOARDS} boards (got {v})")
            return v
        items = v.split(",") if isinstance(v, str) else v if isinstance(v, list) else None
        if items is None or any(isinstance(x, (bool, dict, list, float)) for x in items):
            raise ValueError("give a number of boards (2) or a list of CUDA indexes, UUIDs or "
                             "PCI bus ids (0,1)")  # fmt: skip
        out = [str(x).strip() for x in items if str(x).strip()]
        if not out or len(set(out)) != len(out):
            raise ValueError("needs at least one board, each named once, e.g. gpus: 2 or 0,1")
        return out

    @model_validator(mode="after")
    def _gpus_and_device(self) -> RunConfig:
        n = self.gpus if isinstance(self.gpus, int) else len(self.gpus or [])
        if n > 1 and self.device.startswith("cuda:"):
            raise ValueError(f"device: {self.device} is one board but gpus asks for {n}; use "
                             "device: cuda with gpus")  # fmt: skip
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE_RE.match(v):
            raise ValueError(f"unknown device {short(v)}; use auto, cpu, cuda or cuda:N")
        return v

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        if v not in PRECISION_CHOICES:
            raise ValueError(
                f"unknown precision {short(v)}; choose one of {', '.join(PRECISION_CHOICES)}"
            )
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if v.startswith("preset:"):
            name = v.removeprefix("preset:")
            if name not in PRESETS:
                hint = _nearest(name, PRESETS)
                raise ValueError(
                    f"unknown preset {short(name)}{hint}; presets: {', '.join(PRESETS)}"
                )
        return v


# The one table of command-line flags: every leaf field of RunConfig, by dotted path, with its
# flag name, or None where a field is YAML-only. `tokenwatt run` builds its options from it
# (types, help and defaults come from the schema), and `tokenwatt.run(**overrides)` takes the
# same names with underscores.
FLAGS: dict[str, str | None] = {
    "name": "name",
    "engine": "engine",
    "model": "model",
    "precision": "precision",
    "compile": "compile",
    "experts": "experts",
    "device": "device",
    "gpus": "model-gpus",  # --gpus is measure.gpus (the boards measured), older and documented
    "trust_remote_code": "trust-remote-code",
    "allow_pickle": "allow-pickle",
    "workload.batch_size": "batch-size",
    "workload.prompt_tokens": "prompt-tokens",
    "workload.new_tokens": "new-tokens",
    "workload.seed": "seed",
    "workload.prompts_file": "prompts-file",
    "workload.requests": "requests",
    "workload.request_rate": "request-rate",
    "workload.burstiness": "burstiness",
    "workload.trace": "trace",
    "measure.meter": "meter",
    "measure.gpus": "gpus",
    "measure.warmup": "warmup",
    "measure.repeats": "repeats",
    "measure.min_seconds": "min-seconds",
    "measure.idle_seconds": "idle-seconds",
    "measure.sample_interval_ms": "sample-interval-ms",
    "measure.cooldown_s": "cooldown-s",
    "measure.random_delay_s": "random-delay-s",
    "measure.cpu_tdp_w": "cpu-tdp-w",
    "measure.dcgm_url": "dcgm-url",
    "measure.dcgm_pod": "dcgm-pod",
    "measure.dcgm_container": "dcgm-container",
    "measure.prometheus_url": "prometheus-url",
    "measure.prometheus_selector": "prometheus-selector",
    "fidelity.enabled": "fidelity",
    "fidelity.reference": "fidelity-reference",
    "fidelity.sequences": "fidelity-sequences",
    "fidelity.tokens": "fidelity-tokens",
    "carbon.region": "region",
    "carbon.pue": "pue",
    "server.url": "url",
    "server.model": "server-model",
    "server.launch": "launch",
    "server.launch_timeout_s": "launch-timeout-s",
    "server.request_timeout_s": "request-timeout-s",
    "out": "out",
}
# Python keyword (tokenwatt.run(batch_size=...), click parameter names) -> dotted path.
OVERRIDE_PATHS: dict[str, str] = {
    flag.replace("-", "_"): path for path, flag in FLAGS.items() if flag is not None
}


def leaf_fields(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> pydantic FieldInfo of every leaf field of the schema."""
    model = model or RunConfig
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(leaf_fields(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


def default_config_text() -> str:
    """The quickstart config embedded in the package (what `tokenwatt run` runs)."""
    return resources.files("tokenwatt").joinpath("configs/quickstart.yaml").read_text("utf-8")


MAX_CONFIG_BYTES = 256 << 10  # real configs are a few KiB; PyYAML builds ~100 KiB/s of objects
MAX_VALUES = 1_000_000  # values once YAML aliases expand (a 256 KiB file without them holds fewer)
MAX_DEPTH = 64


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's parser where installed: 50x faster on large files)
    that refuses duplicate keys, which PyYAML would silently resolve to the last one."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden by the mapping's own keys
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML's own check says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short(key)}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """Parse a YAML config file (or the embedded quickstart when path is None)."""
    if path is None:
        text, where = default_config_text(), "embedded quickstart"
    else:
        text, where = _read_config_text(Path(path)), str(path)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: malformed YAML{at}: {problem}; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{where}: malformed YAML: nested too deep; flatten it") from None
    except (ValueError, TypeError, IndexError, AttributeError, OverflowError, KeyError) as e:
        # an impossible date, an empty !!int or !!timestamp: PyYAML's constructors crash
        why = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise ConfigError(f"{where}: malformed YAML: a value cannot be read ({why}); "
                          "fix the value") from None  # fmt: skip
    if data is None:
        print(f"note: {where} is empty: every field takes its default", file=sys.stderr)
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: a config must be a mapping of keys to values, not a list or scalar"
        )
    _check_expanded_size(data, where)
    return data


def _read_config_text(p: Path) -> str:
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass a YAML file path")
    with open(p, "rb") as f:  # read at most the cap: the file may be huge or still growing
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES >> 10} KiB; a config is a "
                          "short YAML file (a grid is a few lists, not every case written "
                          "out)")  # fmt: skip
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text; a config is a YAML text file") from None


def _check_expanded_size(data: Any, where: str) -> None:
    """Refuse YAML aliases that expand into a bomb (a billion laughs) or refer to themselves:
    the loaded object shares the aliased parts, so it is small, but everything that copies or
    prints it would expand them. Counted once per shared part, so the check is linear."""
    sizes: dict[int, int] = {}

    def size(o: Any, depth: int, path: set[int]) -> int:
        if not isinstance(o, (dict, list)):
            return 1
        if id(o) in path:
            raise ConfigError(f"{where}: a YAML alias refers to itself; remove the loop")
        if id(o) not in sizes:
            if depth > MAX_DEPTH:
                raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels; flatten it")
            path.add(id(o))
            items = [*o.keys(), *o.values()] if isinstance(o, dict) else o
            n = 1
            for item in items:
                n += size(item, depth + 1, path)
                if n > MAX_VALUES:
                    raise ConfigError(f"{where}: YAML aliases expand to more than "
                                      f"{MAX_VALUES:,} values; write the values out or use "
                                      "fewer aliases")  # fmt: skip
            path.discard(id(o))
            sizes[id(o)] = n
        return sizes[id(o)]

    size(data, 0, set())


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set overrides (flag names with underscores, or dotted paths; None means not given) into
    a nested config dict. An unknown name is a ConfigError with the nearest valid one."""
    out = _deep_copy(data)
    for key, value in overrides.items():
        if value is None:
            continue
        dotted = OVERRIDE_PATHS.get(key) or (key if key in leaf_fields() else None)
        if dotted is None:
            hint = _nearest(key, [*OVERRIDE_PATHS, *leaf_fields()])
            raise ConfigError(f"unknown setting {short(key)}{hint}; see tokenwatt run --help")
        path = dotted.split(".")
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return out


def validate(data: dict[str, Any], where: str = "config") -> RunConfig:
    """Validate a config dict; raise ConfigError with one line naming the field and the fix."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {_describe(e.errors()[0])}") from None


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read, override and validate a run config."""
    where = str(path) if path else "embedded quickstart"
    return validate(apply_overrides(read_yaml(path), overrides), where)


def _describe(err: dict[str, Any]) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "config"
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        parent = _model_at(err["loc"][:-1])
        hint = _nearest(str(err["loc"][-1]), parent.model_fields) if parent else ""
        return f"unknown key {field!r}{hint}; remove it or fix its spelling"
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        return f"{field}: {msg}" if err["loc"] else msg
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {short(value)})"
    return f"{field}: {msg}{shown}"


def short(value: Any, limit: int = 60) -> str:
    """A bounded repr for messages: a value from a config file may be huge."""
    import reprlib

    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"  # repr() of 10**5000 raises
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, limit, limit
    r.maxlong = 40
    text = r.repr(value)
    return text if len(text) <= 2 * limit else text[: 2 * limit] + "..."


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for part in loc:
        info = model.model_fields.get(str(part))
        ann = getattr(info, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _nearest(name: str, options: Any) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def case_id(cfg: RunConfig) -> str:
    """A stable hash of everything that defines a case (not where its results go)."""
    import hashlib
    import json

    d = config_to_dict(cfg)
    d.pop("out", None)
    d.pop("name", None)
    # Fields added later: at their defaults they keep earlier cases' ids.
    if d.get("gpus") is None:
        d.pop("gpus", None)
    if d.get("engine") == "transformers":
        d.pop("engine", None)
    if d.get("server") == config_to_dict(RunConfig())["server"]:
        d.pop("server", None)
    for key, default in (("requests", None), ("request_rate", None), ("burstiness", 1.0),
                         ("trace", None)):  # fmt: skip
        if d.get("workload", {}).get(key, default) == default:
            d.get("workload", {}).pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
