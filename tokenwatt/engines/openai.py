"""Engine openai: measure a running OpenAI-compatible server (vLLM, SGLang, llama.cpp, ...).

Each generate() is one pass: it streams the load shape's requests (load_shape.py: batch_size
always in flight, or arriving at a rate or a trace's times with batch_size at most in flight)
and returns their timings; the whole-run and steady-state windows come from those timings
(serving.py), dated on time.monotonic, which the recorder places on its power trace.

Prompts are random token ids in [0, 1000): the server does not report its vocabulary size,
and every tokenizer we know has more than 1000 ids, so such a prompt is valid for any model
(ids are sent as a token list, so no tokenizer runs on either side). Every generate() call
draws fresh ids (seeded by workload.seed and the call's number) so a server's prefix cache
cannot skip the prefill of a repeated prompt; prompts_file lines are sent as text, cycled,
and do repeat across calls.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenwatt.config import RunConfig
from tokenwatt.engines.base import Batch, Engine, Mark, Prepared, RequestTiming, no_mark
from tokenwatt.engines.load_shape import LoadShape
from tokenwatt.engines.openai_stream import endpoint, error_message, http_get, run_requests
from tokenwatt.engines.serving import phase_marks
from tokenwatt.errors import UserError
from tokenwatt.placement import Placement

if TYPE_CHECKING:
    from tokenwatt._util.proctree import ServerProcesses
    from tokenwatt.engines.server_metrics import TrialCheck

PROMPT_ID_RANGE = 1000  # ids below this exist in every vocabulary (see the module docstring)
PROBE_TOKENS = 2
GET_TIMEOUT_S = 10.0


class OpenAIEngine(Engine):
    name = "openai"
    live_marks = False
    windows = "serving"
    clock = staticmethod(time.monotonic)
    in_process = False  # the server runs the model; this process drives it
    sets_precision = False  # the server runs its own number format
    errors_are_own = False  # a failing request is the server's fault, not this process's

    @classmethod
    def check(cls, cfg: RunConfig, device: str) -> None:
        LoadShape(cfg.workload)  # a bad trace is refused before any meter opens

    @classmethod
    def runs_model_here(cls, cfg: RunConfig) -> bool:
        return bool(cfg.server.launch)  # a launched server runs beside this process

    def __init__(self, cfg: RunConfig, placement: Placement | None = None,
                 out_dir: Path | None = None, log_path: Path | None = None) -> None:  # fmt: skip
        if not cfg.server.url:
            raise UserError("server.url: engine openai needs the server's base URL; add "
                            "--url http://HOST:PORT/v1")  # fmt: skip
        self.cfg, self.url = cfg, cfg.server.url
        self.ep = endpoint(self.url)
        self.log_path = log_path or Path(out_dir or cfg.out) / "server.log"
        self.server: Any = None  # a LaunchedServer while one runs
        self.model = cfg.server.model or ""
        self.ignore_eos = True
        self.usage = True  # whether the server reports usage (else tokens = streamed chunks)
        self.version = ""
        self.calls = 0  # generate() calls so far: each draws fresh prompt ids
        self.lines: list[str] | None = None  # workload.prompts_file's lines, once read
        self.check: TrialCheck | None = None  # the server's /metrics at the trial's start
        self.shape = LoadShape(cfg.workload)  # reads a trace now: a bad one is refused here

    # -- prepare ---------------------------------------------------------------------------

    def prepare(self, on_phase: Callable[[str, str], None]) -> Prepared:
        try:
            return self._prepare(on_phase)
        except BaseException:
            self.close()  # a launched server must not outlive a failed prepare
            raise

    def _prepare(self, on_phase: Callable[[str, str], None]) -> Prepared:
        s = self.cfg.server
        if s.launch:
            from tokenwatt.engines.launch import LaunchedServer

            on_phase("load", f"launching the server ({s.launch.split()[0]})")
            self.server = LaunchedServer(s.launch, self.url, self.log_path, s.launch_timeout_s)
            self.server.start()
        on_phase("load", f"reaching the server at {self.url}")
        listed = self._models()
        if s.model and s.model not in listed:
            raise UserError(
                f"server.model: {s.model!r} is not served at {self.url}; it serves "
                f"{', '.join(map(repr, listed[:10]))}: fix --server-model"
            )
        self.model = s.model or listed[0]
        self.version = self._version()
        self._probe(on_phase)
        return Prepared(
            constants={
                "precision_backend": "server",
                "emulated": False,
                "server_model": self.model,
                **self.shape.columns(),
            },  # fmt: skip
            model_info={},
            meta={
                "server": {
                    "url": self.url,
                    "model": self.model,
                    "models": listed,
                    "ignore_eos": self.ignore_eos,
                    "usage_reported": self.usage,
                    "version": self.version,
                    "launched": s.launch,
                }
            },  # fmt: skip
        )

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            return http_get(self.ep, path, GET_TIMEOUT_S)
        except (OSError, http.client.HTTPException) as e:
            why = getattr(e, "strerror", None) or type(e).__name__
            raise UserError(
                f"server.url: cannot reach {self.ep.root} ({why}); start the "
                "server, give --launch to start it, or fix --url"
            ) from None

    def _models(self) -> list[str]:
        path = self.ep.base_path + "/models"
        status, body = self._get(path)
        if status == 404:
            raise UserError(f"server.url: {self.ep.root}{path} answered 404; give the "
                            "OpenAI-compatible base URL, e.g. http://HOST:PORT/v1")  # fmt: skip
        if status != 200:
            raise UserError(f"server.url: {self.ep.root}{path} answered HTTP {status} "
                            f"({error_message(body)}); fix --url or the server")  # fmt: skip
        try:
            data = json.loads(body)["data"]
            listed = [str(m["id"]) for m in data]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"server.url: {self.ep.root}{path} is not an OpenAI model list "
                            "(no JSON data[].id); give an OpenAI-compatible server's base "
                            "URL, e.g. http://HOST:PORT/v1") from None  # fmt: skip
        if not listed:
            raise UserError(f"server.url: the server at {self.url} lists no models; load a "
                            "model in the server")  # fmt: skip
        return listed

    def _version(self) -> str:
        """vLLM answers GET /version with {"version": "..."}; others may not: ''."""
        try:
            status, body = http_get(self.ep, "/version", GET_TIMEOUT_S)
            version = json.loads(body).get("version", "") if status == 200 else ""
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            return ""
        return str(version)[:100]

    def _probe(self, on_phase: Callable[[str, str], None]) -> None:
        """One tiny request: the server streams completions, and accepts ignore_eos or not."""
        r = self._send([self._prompts(1, probe=True)[0]], PROBE_TOKENS, 1)[0]
        if r.error and "ignore_eos" in r.error and r.error.startswith("HTTP 4"):
            self.ignore_eos = False
            on_phase("warning", "the server refuses ignore_eos: sequences may stop at EOS "
                     "before new_tokens (tokens are counted from usage)")  # fmt: skip
            r = self._send([self._prompts(1, probe=True)[0]], PROBE_TOKENS, 1)[0]
        if r.error:
            raise UserError(f"server.url: a streamed /completions request to {self.url} "
                            f"failed ({r.error}); the server must serve OpenAI completions "
                            "with stream: true")  # fmt: skip
        if r.first_token_t is None:
            raise UserError(f"server.url: {self.url} streamed no text for a completion; the "
                            "server must stream OpenAI completions chunks")  # fmt: skip
        self.probe_timing = r
        self.usage = getattr(r, "counted_from", "usage") == "usage"
        if not self.usage:
            on_phase(
                "warning",
                "the server sends no usage: tokens are counted as streamed "
                "chunks (one token each), which undercounts chunks of several",
            )

    def fit_window(self, min_window_s: float, on_phase: Callable[[str, str], None]) -> None:
        """The closed loop's steady state lasts about (requests / batch_size - 1) request
        times; a request's time is estimated from the probe (its first token, then new_tokens
        at its pace). Too few requests for `min_window_s`: send more a pass, and say so."""
        w, r = self.cfg.workload, getattr(self, "probe_timing", None)
        if self.shape.open_loop or r is None or r.first_token_t is None or r.end_t is None:
            return
        gap = (r.end_t - r.first_token_t) / max(r.output_tokens - 1, 1)
        request_s = (r.first_token_t - r.sent_t) + gap * max(w.new_tokens - 1, 1)
        n = self.shape.request_count()
        if request_s <= 0 or (n / w.batch_size - 1) * request_s >= min_window_s:
            return
        rounds = math.ceil(min_window_s / request_s) + 1
        need = w.batch_size * rounds
        self.cfg = self.cfg.model_copy(update={"workload": w.model_copy(update={"requests": need})})
        self.shape = LoadShape(self.cfg.workload)
        on_phase("warning", f"workload.requests: {n} requests a pass would give a steady state "
                 f"of about {max(n / w.batch_size - 1, 0) * request_s:.1f} s, under the "
                 f"{min_window_s:g} s the meter's collection interval needs; sending {need} "
                 "requests a pass (give --requests to set it)")  # fmt: skip

    # -- generate --------------------------------------------------------------------------

    def _prompts(self, n: int, probe: bool = False) -> list[list[int] | str]:
        w = self.cfg.workload
        if w.prompts_file:
            if self.lines is None:
                self.lines = _prompt_lines(w.prompts_file)
            lines = self.lines
            start = 0 if probe else (self.calls * n) % len(lines)
            return [lines[(start + i) % len(lines)] for i in range(n)]
        rng = random.Random(f"tokenwatt:{w.seed}:{'probe' if probe else self.calls}")
        sizes = [min(w.prompt_tokens, 8)] * n if probe else \
            self.shape.input_lengths() or [w.prompt_tokens] * n  # fmt: skip
        return [[rng.randrange(PROMPT_ID_RANGE) for _ in range(size)] for size in sizes]

    def _send(self, prompts: list[Any], max_tokens: int | list[int], concurrency: int,
              arrivals: list[float] | None = None) -> list[RequestTiming]:  # fmt: skip
        extra = {"ignore_eos": True} if self.ignore_eos else {}
        return run_requests(self.url, self.model, prompts, max_tokens, concurrency,
                            self.cfg.server.request_timeout_s, clock=self.clock,
                            extra_body=extra, arrivals=arrivals)  # fmt: skip

    def generate(self, mark: Mark = no_mark) -> Batch:
        w, shape = self.cfg.workload, self.shape
        prompts = self._prompts(shape.request_count())
        arrivals = shape.offsets(self.calls)
        self.calls += 1
        max_tokens = shape.output_lengths() or w.new_tokens
        timings = self._send(prompts, max_tokens, w.batch_size, arrivals)
        ok = [r for r in timings if r.ok]
        if not ok:
            raise RuntimeError(f"all {len(timings)} requests to {self.url} failed; the first: "
                               f"{timings[0].error}")  # fmt: skip
        tokens = sum(r.output_tokens for r in ok)
        # Text prompts tokenise to different lengths: the server's mean count is the length.
        prompt_tokens = w.prompt_tokens
        if (w.prompts_file or w.trace) and any(r.prompt_tokens for r in ok):
            prompt_tokens = round(sum(r.prompt_tokens for r in ok) / len(ok))
        return Batch(tokens_generated=tokens, decode_tokens=tokens - len(ok),
                     batch_size=w.batch_size, prompt_tokens=prompt_tokens,
                     marks=phase_marks(timings, w.batch_size, shape.open_loop),
                     requests=timings)  # fmt: skip

    # -- describe / close ------------------------------------------------------------------

    def model_label(self) -> str:
        return self.model or self.cfg.server.model or self.cfg.model

    def warnings(self, meters: list[Any]) -> list[str]:
        gpu = any(c.scope == "gpu-board" for m in meters for c in m.channels)
        if gpu or self.cfg.server.launch:  # a launched server is in this process tree
            return []
        return [
            "server-not-covered: the CPU meter covers this process tree only, and the "
            "server was not launched by tokenwatt; give --gpus for its boards or "
            "--launch it"
        ]

    def trial_started(self) -> None:
        from tokenwatt.engines.server_metrics import TrialCheck

        self.check = TrialCheck(self.ep).start()

    def trial_columns(self, batches: list[Batch]) -> dict[str, Any]:
        return self.check.finish(batches) if self.check else {}

    def server_processes(self) -> ServerProcesses:
        from tokenwatt.engines.server_processes import launched, listening

        if self.server is not None and self.server.proc is not None:
            return launched(self.server.proc.pid)
        return listening(self.ep.host, self.ep.port)

    def describe(self) -> dict[str, Any]:
        w, s = self.cfg.workload, self.cfg.server
        return {
            "engine": self.name,
            "engine_version": self.version,
            "engine_settings": {
                "url": self.url,
                "model": self.model,
                "concurrency": w.batch_size,
                "requests": self.shape.request_count(),
                "ignore_eos": self.ignore_eos,
                "token_count": "usage" if self.usage else "chunks",
                "launch": s.launch,
                "load_shape": self.shape.name,
                "request_rate": w.request_rate,
                "burstiness": w.burstiness,
                "trace": w.trace,
            },
        }

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()


def _prompt_lines(path: str) -> list[str]:
    """The prompts file's non-empty lines (sent as text: the server tokenises them)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"workload.prompts_file: {path!r} does not exist; give a text "
                        "file") from None  # fmt: skip
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise UserError(f"workload.prompts_file: cannot read {path!r} ({why}); give a UTF-8 "
                        "text file with one prompt per line") from None  # fmt: skip
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"workload.prompts_file: {path!r} is empty; put one prompt per line")
    return lines
