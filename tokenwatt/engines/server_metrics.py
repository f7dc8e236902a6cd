"""The server's own word on every trial (engine openai): its Prometheus `/metrics`, scraped
before and after the trial, gives the tokens it generated and its mean time to first token and
inter-token latency over the trial; they are stored beside tokenwatt's own figures and a
disagreement past the tolerances below is flagged.

vLLM, SGLang and TGI expose /metrics with their own names (NAMES). Counters and histogram
sums are summed over their label sets (a server serving several models counts them all: other
traffic on the server shows as a disagreement, which is the point). Parsed with
prometheus_client's parser, the reference implementation of the text format.
"""

from __future__ import annotations

import http.client
import statistics
from dataclasses import dataclass
from typing import Any

from tokenwatt.engines.base import Batch
from tokenwatt.engines.openai_stream import Endpoint, http_get

SCRAPE_TIMEOUT_S = 5.0
# Tolerances of the cross-check. Tokens: the server counts what it generated, tokenwatt what
# usage reported (or chunks streamed): they should be equal; 1% leaves room for a chunk
# counted differently. Mean ITL: the same gaps seen from both ends, within a factor of 1.5
# once past a few milliseconds (vLLM on a CPU: 0.92-0.95x). Mean TTFT one way only: the
# client's includes the server's HTTP front end and queueing before its engine, which vLLM's
# histogram leaves out (35-45 ms of 50-60 on this project's 2-core machine), so only a client
# TTFT shorter than the server's own is a disagreement.
TOKENS_TOLERANCE = 0.01
LATENCY_FACTOR = 1.5
LATENCY_SLACK_S = 0.005

# server -> (generation tokens, prompt tokens, TTFT histogram, ITL histograms by preference);
# counters as their sample names (with _total), histograms as their base names
NAMES: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {
    "vllm": ("vllm:generation_tokens_total", "vllm:prompt_tokens_total",
             "vllm:time_to_first_token_seconds",
             ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")),
    "sglang": ("sglang:generation_tokens_total", "sglang:prompt_tokens_total",
               "sglang:time_to_first_token_seconds",
               ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds")),
    "tgi": ("tgi_request_generated_tokens_sum", "tgi_request_input_length_sum", None,
            ("tgi_request_mean_time_per_token_duration",)),
}  # fmt: skip
COLUMNS = ("server_metrics", "server_generated_tokens", "server_prompt_tokens",
           "server_ttft_s_mean", "server_itl_s_mean", "server_check")  # fmt: skip


def scrape(ep: Endpoint) -> dict[str, float] | None:
    """Every sample of GET /metrics summed over label sets; None when there is none."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        status, body = http_get(ep, "/metrics", SCRAPE_TIMEOUT_S)
    except (OSError, http.client.HTTPException):
        return None
    if status != 200:
        return None
    samples: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(body.decode("utf-8", "replace")):
            for s in family.samples:
                samples[s.name] = samples.get(s.name, 0.0) + float(s.value)
    except ValueError:  # not Prometheus text
        return None
    return samples


def server_of(samples: dict[str, float] | None) -> str:
    """Which server's names the page carries ('' when none we know)."""
    if not samples:
        return ""
    return next((name for name, (gen, *_) in NAMES.items() if gen in samples), "")


@dataclass
class TrialCheck:
    """Scrape at a trial's start; `finish` scrapes again and compares with tokenwatt's."""

    ep: Endpoint
    before: dict[str, float] | None = None

    def start(self) -> TrialCheck:
        self.before = scrape(self.ep)
        return self

    def finish(self, batches: list[Batch]) -> dict[str, Any]:
        tokens, ttft_mean, itl_mean = ours(batches)
        after = scrape(self.ep) if self.before else None
        server = server_of(after) if after else ""
        if not server or self.before is None or after is None:
            return dict.fromkeys(COLUMNS, None) | {"server_metrics": "", "server_check": ""}
        gen, prompt, ttft, itls = NAMES[server]
        delta = {k: after.get(k, 0.0) - self.before.get(k, 0.0) for k in after}
        theirs = {
            "server_metrics": f"{server} /metrics",
            "server_generated_tokens": delta.get(gen),
            "server_prompt_tokens": delta.get(prompt),
            "server_ttft_s_mean": _mean(delta, ttft),
            "server_itl_s_mean": next(
                (m for h in itls if (m := _mean(delta, h)) is not None), None
            ),  # fmt: skip
        }
        theirs["server_check"] = disagreement(theirs, tokens, ttft_mean, itl_mean)
        return theirs


def _apart(ours: float, theirs: float, both_ways: bool) -> bool:
    """Past the latency tolerance: shorter than the server's own, or (both_ways) longer."""
    if abs(ours - theirs) <= LATENCY_SLACK_S:
        return False
    return ours * LATENCY_FACTOR < theirs or (both_ways and ours > theirs * LATENCY_FACTOR)


def _mean(delta: dict[str, float], histogram: str | None) -> float | None:
    if histogram is None:
        return None
    n = delta.get(f"{histogram}_count", 0.0)
    return delta.get(f"{histogram}_sum", 0.0) / n if n > 0 else None


def disagreement(theirs: dict[str, Any], tokens: int, ttft_mean: float | None,
                 itl_mean: float | None) -> str:  # fmt: skip
    """'agrees', or what disagrees past the tolerances, in words."""
    problems = []
    gen = theirs["server_generated_tokens"]
    if gen is not None and abs(tokens - gen) > TOKENS_TOLERANCE * max(gen, 1):
        problems.append(f"tokens {tokens} here vs {gen:.0f} by the server")
    for name, ours, key, both_ways in (("TTFT", ttft_mean, "server_ttft_s_mean", False),
                                       ("ITL", itl_mean, "server_itl_s_mean", True)):  # fmt: skip
        their = theirs[key]
        if ours and their and _apart(ours, their, both_ways):
            problems.append(f"mean {name} {ours * 1e3:.2f} ms here vs {their * 1e3:.2f} ms "
                            "by the server")  # fmt: skip
    return "; ".join(problems) if problems else "agrees"


def ours(batches: list[Batch]) -> tuple[int, float | None, float | None]:
    """tokenwatt's figures over a trial's requests: tokens, mean TTFT, mean streamed gap."""
    done = [r for b in batches for r in b.requests if r.ok]
    ttfts = [r.first_token_t - r.sent_t for r in done if r.first_token_t is not None]
    gaps = [b - a for r in done for a, b in zip(r.token_times, r.token_times[1:])]
    return (sum(r.output_tokens for r in done), statistics.fmean(ttfts) if ttfts else None,
            statistics.fmean(gaps) if gaps else None)  # fmt: skip


def check_warnings(trials: list[dict[str, Any]]) -> list[str]:
    """The summary's warning when the server's word disagreed with tokenwatt's in a trial."""
    off = [t for t in trials if t.get("server_check") not in (None, "", "agrees")]
    if not off:
        return []
    return [
        f"server-disagrees: the server's /metrics disagree with tokenwatt's figures in "
        f"{len({t.get('trial') for t in off})} trial(s) ({off[-1]['server_check']}); "
        "another client may share the server, or it counts differently"
    ]
