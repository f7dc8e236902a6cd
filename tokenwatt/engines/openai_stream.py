"""A streaming client for OpenAI-compatible /v1/completions, timed on the caller's clock.

Stdlib only: one worker thread per in-flight request slot, each holding one keep-alive
HTTP connection, so the client costs little CPU next to the server it measures. Only the
URL's host:port is ever contacted (http.client follows no redirects).

Closed loop: the workers take the next prompt as soon as their request ends. Open loop
(`arrivals`): the caller's thread sends each request at its arrival time to a free worker,
waiting for one only when all `concurrency` are streaming (the cap, vLLM's --max-concurrency).
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tokenwatt.engines.base import RequestTiming

MAX_ERROR_BODY = 64 << 10  # an error page is read this far for its message


@dataclass
class StreamTiming(RequestTiming):
    """A RequestTiming that says where its token count came from: "usage" (the server's final
    usage chunk) or "chunks" (the server sent no usage, so each streamed text chunk counted
    as one token, which undercounts servers that pack several tokens per chunk)."""

    counted_from: str = "usage"
    scheduled_t: float | None = None  # open loop: its arrival time (None: closed loop)
    delayed: bool = False  # open loop: it arrived while `concurrency` were streaming


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: scheme, host, port and the base path (e.g. /v1)."""

    scheme: str
    host: str
    port: int
    base_path: str

    def connect(self, timeout_s: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout_s)

    @property
    def root(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def endpoint(url: str) -> Endpoint:
    """Split a base URL (http://host:8000/v1); a URL without a path means /v1."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(parts.scheme, parts.hostname, port, parts.path.rstrip("/") or "/v1")


def http_get(ep: Endpoint, path: str, timeout_s: float) -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body). Raises OSError/HTTPException."""
    conn = ep.connect(timeout_s)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(MAX_ERROR_BODY)
    finally:
        conn.close()


def error_message(body: bytes) -> str:
    """The message of an error body: OpenAI's {"error": {"message"}}, vLLM's {"message"},
    FastAPI's {"detail"}, else the text itself; one line, bounded."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            err = err.get("message") or err.get("detail") or err
        text = err if isinstance(err, str) else json.dumps(err)
    return one_line(text)


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What a reused keep-alive socket the server has since closed raises on the next request.
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class StreamFailed(Exception):
    """A request failed in a way the server or the network caused (its text is the error)."""


def run_requests(
    url: str,
    model: str,
    prompts: Sequence[list[int] | str],
    max_tokens: int | Sequence[int],
    concurrency: int,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    extra_body: dict[str, Any] | None = None,
    arrivals: Sequence[float] | None = None,
) -> list[RequestTiming]:
    """Stream one completion per prompt (max_tokens: one for all, or one per prompt). Closed
    loop: exactly `concurrency` in flight, a new one starts when one finishes. `arrivals`
    (s from the call, non-decreasing): each is sent at its time, `concurrency` at most in
    flight. Failures a server or network causes are each request's `error`; only programming
    errors raise. Results are in prompt order."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if arrivals is not None and len(arrivals) != len(prompts):
        raise ValueError("arrivals and prompts differ in length")
    ep = endpoint(url)
    base = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **(extra_body or {})}  # fmt: skip
    results: list[RequestTiming | None] = [None] * len(prompts)
    pool = _Pool(ep, base, prompts, results, timeout_s, clock)
    n_workers = min(concurrency, len(prompts))
    if arrivals is not None:
        pool.open_loop(n_workers)
    workers = [threading.Thread(target=pool.work, daemon=True, name=f"tokenwatt-stream-{i}")
               for i in range(n_workers)]  # fmt: skip
    for w in workers:
        w.start()
    try:
        if arrivals is not None:
            pool.dispatch(arrivals, n_workers)
        for w in workers:
            w.join()
    except BaseException:  # Ctrl-C: no new requests; the ones in flight end on their own
        pool.stop.set()
        raise
    if pool.crash is not None:
        raise pool.crash
    return [r for r in results if r is not None]


class _Pool:
    """Hands out prompt indexes to the workers; each worker streams on its own connection."""

    def __init__(
        self,
        ep: Endpoint,
        base: dict[str, Any],
        prompts: Sequence[Any],
        results: list[Any],
        timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.ep, self.base, self.prompts, self.results = ep, base, prompts, results
        self.timeout_s, self.clock = timeout_s, clock
        self.path = ep.base_path + "/completions"
        self.lock = threading.Lock()
        self.next = 0
        self.stop = threading.Event()
        self.crash: BaseException | None = None
        # Open loop only: the dispatcher's queue of due indexes, the free slots, and each
        # request's (arrival time, whether it waited for a slot).
        self.due: queue.SimpleQueue[int | None] | None = None
        self.slots: threading.Semaphore | None = None
        self.arrival: dict[int, tuple[float, bool]] = {}

    def open_loop(self, n_workers: int) -> None:
        self.due, self.slots = queue.SimpleQueue(), threading.Semaphore(n_workers)

    def dispatch(self, arrivals: Sequence[float], n_workers: int) -> None:
        """Send each request at its arrival (in the caller's thread, so Ctrl-C stops it)."""
        assert self.due is not None and self.slots is not None
        t0 = self.clock()
        try:
            for i, offset in enumerate(arrivals):
                at = t0 + offset
                if (wait := at - self.clock()) > 0:
                    self.stop.wait(wait)  # a worker's crash ends the wait, as Ctrl-C does
                if self.stop.is_set():
                    return
                delayed = not self.slots.acquire(blocking=False)  # every slot is streaming
                while delayed and not self.slots.acquire(timeout=0.2):
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    return
                self.arrival[i] = (at, delayed)
                self.due.put(i)
        finally:
            for _ in range(n_workers):
                self.due.put(None)  # each worker's end

    def _take(self) -> int | None:
        if self.due is not None:
            i = self.due.get()
            return None if self.stop.is_set() else i
        with self.lock:
            if self.stop.is_set() or self.next >= len(self.prompts):
                return None
            self.next += 1
            return self.next - 1

    def _body(self, i: int) -> bytes:
        mt = self.base["max_tokens"]
        per = {} if isinstance(mt, int) else {"max_tokens": mt[i]}
        return json.dumps({**self.base, **per, "prompt": self.prompts[i]}).encode()

    def _timing(self, i: int) -> StreamTiming:
        at, delayed = self.arrival.get(i, (None, False))
        timing = self.results[i] = StreamTiming(sent_t=self.clock(), scheduled_t=at,
                                                delayed=delayed)  # fmt: skip
        return timing

    def work(self) -> None:
        conn = self.ep.connect(self.timeout_s)
        reused = False  # whether conn has carried a finished request (and may have gone stale)
        try:
            while (i := self._take()) is not None:
                body = self._body(i)
                timing = self._timing(i)
                try:
                    try:
                        _stream_one(conn, self.path, body, timing, self.clock)
                    except STALE:  # the server closed our idle keep-alive socket: resend once
                        if not reused or timing.token_times:
                            raise
                        conn.close()
                        timing = self._timing(i)
                        _stream_one(conn, self.path, body, timing, self.clock)
                except StreamFailed as e:
                    _fail(conn, timing, str(e), self.clock)
                except TimeoutError:
                    _fail(
                        conn,
                        timing,
                        f"no data for {self.timeout_s:g} s (server.request_"
                        f"timeout_s) after {len(timing.token_times)} chunks",
                        self.clock,
                    )
                except (OSError, http.client.HTTPException) as e:
                    why = one_line(str(e) or type(e).__name__)
                    _fail(conn, timing, f"connection failed after {len(timing.token_times)} "
                          f"chunks: {type(e).__name__}: {why}", self.clock)  # fmt: skip
                reused = timing.error == ""
                if self.slots is not None:
                    self.slots.release()  # this request's slot is free for the next arrival
        except BaseException as e:  # a programming error: stop everyone, re-raise in caller
            self.crash = e
            self.stop.set()
        finally:
            conn.close()


def _fail(conn: http.client.HTTPConnection, t: StreamTiming, why: str, clock: Any) -> None:
    t.error = one_line(why)
    t.end_t = clock()  # when its slot came free; `ok` stays False through `error`
    conn.close()  # the next request reconnects (http.client opens on demand)


def _stream_one(
    conn: http.client.HTTPConnection,
    path: str,
    body: bytes,
    t: StreamTiming,
    clock: Callable[[], float],
) -> None:
    conn.request("POST", path, body=body, headers={
        "Content-Type": "application/json", "Accept": "text/event-stream"})  # fmt: skip
    resp = conn.getresponse()
    if resp.status != 200:
        msg = error_message(resp.read(MAX_ERROR_BODY))
        raise StreamFailed(f"HTTP {resp.status}: {msg}")
    usage: dict[str, Any] | None = None
    chunks = 0
    while True:
        line = resp.readline()
        if not line:
            raise StreamFailed(f"stream ended after {chunks} chunks without [DONE]")
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, event:/id: fields
        data = line[5:].strip()
        if data == b"[DONE]":
            t.end_t = clock()
            break
        now = clock()
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamFailed(f"malformed stream chunk: {one_line(repr(data[:80]))}") from None
        if not isinstance(chunk, dict):
            raise StreamFailed(f"stream chunk is not a JSON object: {one_line(repr(data[:80]))}")
        if chunk.get("error") or chunk.get("object") == "error":
            raise StreamFailed(f"server error in stream: {error_message(data)}")
        choices = chunk.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(first, dict) and first.get("text"):
            chunks += 1
            t.token_times.append(now)
            if t.first_token_t is None:
                t.first_token_t = now
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
    try:
        resp.read()  # the end of the chunked body, so the connection can be reused
    except (OSError, http.client.HTTPException):
        conn.close()  # finished all the same; the next request opens a new connection
    _count(t, usage, chunks)


def _count(t: StreamTiming, usage: dict[str, Any] | None, chunks: int) -> None:
    if usage and isinstance(usage.get("completion_tokens"), int):
        t.output_tokens = usage["completion_tokens"]
        prompt = usage.get("prompt_tokens")
        t.prompt_tokens = prompt if isinstance(prompt, int) else 0
    else:
        t.output_tokens, t.counted_from = chunks, "chunks"
