"""A small OpenAI-compatible server for tests: streams /v1/completions one token per chunk.

    with FakeOpenAI(delay_s=0.001) as fake:      # fake.url == "http://127.0.0.1:PORT/v1"
        ...                                      # fake.max_in_flight, fake.bodies, fake.arrivals
        fake.served                              # per request: the server's own times

Modes: "ok", "refuse" (nothing listens at the port), "error500", "reject_ignore_eos" (400
naming ignore_eos), "stall" (goes silent after `after` tokens), "die" (closes the socket
after `after` tokens), "no_usage" (no usage chunk). `kill_after=R` kills the whole server
once R requests have finished (in-flight streams are cut, new connections refused).
Also runs standalone for --launch tests: python tests/fake_openai.py --port P
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "refuse", "error500", "reject_ignore_eos", "stall", "die", "no_usage")
VERSION = "0.0.1-fake"


class FakeOpenAI:
    def __init__(self, mode: str = "ok", delay_s: float = 0.0, first_delay_s: float = 0.0,
                 after: int = 2, kill_after: int | None = None, models: tuple[str, ...] =
                 ("fake-model",), port: int = 0, metrics: bool = True,
                 metrics_skew: float = 1.0) -> None:  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {MODES}")
        self.mode, self.delay_s, self.first_delay_s = mode, delay_s, first_delay_s
        self.after, self.kill_after, self.models = after, kill_after, models
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.finished = 0
        self.bodies: list[dict[str, Any]] = []
        # GET /metrics in vLLM's names, from the server's own timings (metrics_skew scales its
        # token count: a server whose word disagrees with the client's)
        self.metrics, self.metrics_skew = metrics, metrics_skew
        self.counts = {"prompt": 0, "generation": 0, "ttft_sum": 0.0, "ttft_n": 0,
                       "itl_sum": 0.0, "itl_n": 0}  # fmt: skip
        self.arrivals: list[float] = []  # time.monotonic() as each completion request came in
        # per streamed request, on time.monotonic(): arrived, first token written, last token
        # written, [DONE] written (None where the stream was cut before it)
        self.served: list[dict[str, float | None]] = []
        self.dead = threading.Event()  # set on close/kill: stalls end, streams are cut
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if mode == "refuse":  # a port nobody listens on: bind, read it, let it go
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
                self.port = s.getsockname()[1]
        else:
            self.server = _Server(("127.0.0.1", port), _handler(self))
            self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> FakeOpenAI:
        if self.server is not None:
            self._thread = threading.Thread(
                target=self.server.serve_forever, daemon=True, kwargs={"poll_interval": 0.05}
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening and cut every stream (what a killed server does)."""
        self.dead.set()
        server, self.server = self.server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
            server.server_close()

    def _request_started(self, body: dict[str, Any], arrived: float) -> None:
        with self.lock:
            self.bodies.append(body)
            self.arrivals.append(arrived)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def count(self, prompt: int, generated: int, ttft_s: float, gaps: list[float]) -> None:
        with self.lock:
            c = self.counts
            c["prompt"] += prompt
            c["generation"] += generated
            c["ttft_sum"] += ttft_s
            c["ttft_n"] += 1
            c["itl_sum"] += sum(gaps)
            c["itl_n"] += len(gaps)

    def prometheus_text(self) -> str:
        with self.lock:
            c = dict(self.counts)
        label = '{model_name="' + self.models[0] + '",engine="0"}'
        lines = []
        for name, value in (
            ("prompt_tokens", c["prompt"]),
            ("generation_tokens", c["generation"] * self.metrics_skew),
        ):
            lines += [f"# TYPE vllm:{name} counter", f"vllm:{name}_total{label} {value}"]
        for name, key in (
            ("time_to_first_token_seconds", "ttft"),
            ("inter_token_latency_seconds", "itl"),
        ):
            lines += [f"# TYPE vllm:{name} histogram",
                      f'vllm:{name}_bucket{label[:-1]},le="+Inf"}} {c[key + "_n"]}',
                      f"vllm:{name}_sum{label} {c[key + '_sum']}",
                      f"vllm:{name}_count{label} {c[key + '_n']}"]  # fmt: skip
        return "\n".join(lines) + "\n"

    def _request_ended(self, finished: bool) -> None:
        with self.lock:
            self.in_flight -= 1
            self.finished += finished
            kill = finished and self.finished == self.kill_after
        if kill:  # shutdown() waits for serve_forever: not from a handler thread's own call
            self.dead.set()
            threading.Thread(target=self.close, daemon=True).start()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog: the default 5 resets a burst of connections


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.fake = fake
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked streams
    timeout = 30  # an idle keep-alive connection's thread ends after this
    fake: FakeOpenAI

    def setup(self) -> None:
        super().setup()  # no Nagle: one small chunk per token, sent at once (as uvicorn does)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _text(self, text: str) -> None:
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.fake.dead.is_set():
            return self._cut()
        if self.path == "/health":
            return self._json(200, {})
        if self.path == "/version":
            return self._json(200, {"version": VERSION})
        if self.path == "/metrics" and self.fake.metrics:
            return self._text(self.fake.prometheus_text())
        if self.path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.fake.models]
            return self._json(200, {"object": "list", "data": data})
        self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.monotonic()  # before the body is read: when the request reached us
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.fake.dead.is_set():
            return self._cut()
        if self.path != "/v1/completions":
            return self._json(404, {"detail": "Not Found"})
        mode = self.fake.mode
        if mode == "error500":
            return self._json(
                500,
                {
                    "error": {
                        "message": "fake engine crashed",
                        "type": "InternalServerError",
                        "code": 500,
                    }
                },
            )
        if mode == "reject_ignore_eos" and "ignore_eos" in body:
            return self._json(
                400,
                {
                    "object": "error",
                    "type": "BadRequestError",
                    "code": 400,
                    "message": "ignore_eos: Extra inputs are not permitted",
                },
            )
        if body.get("model") not in self.fake.models:
            return self._json(404, {"object": "error", "message": f"model {body.get('model')!r}"
                                    " does not exist", "code": 404})  # fmt: skip
        self.fake._request_started(body, arrived)
        finished = False
        try:
            finished = self._stream(body, arrived)
        finally:
            if not finished:
                self.fake._request_ended(False)

    def _stream(self, body: dict[str, Any], arrived: float) -> bool:
        fake, n = self.fake, int(body.get("max_tokens") or 16)
        prompt = body.get("prompt", "")
        prompt_n = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        head = (
            '{"id":"cmpl-fake","object":"text_completion","created":0,"model":'
            + json.dumps(body["model"])
            + ',"choices":[{"index":0,"text":" t'
        )
        t0, times = time.monotonic(), []
        served: dict[str, float | None] = {
            "arrived": arrived,
            "first": None,
            "last": None,
            "done": None,
        }
        with fake.lock:
            fake.served.append(served)
        if fake.first_delay_s:
            time.sleep(fake.first_delay_s)
        for i in range(n):
            if fake.dead.is_set() or (fake.mode == "die" and i == fake.after):
                return self._cut()
            if fake.mode == "stall" and i == fake.after:
                fake.dead.wait(60)
                return self._cut()
            if i and fake.delay_s:
                time.sleep(fake.delay_s)
            reason = '"length"' if i == n - 1 else "null"
            self._event(f'{head}{i}","logprobs":null,"finish_reason":{reason}}}],"usage":null}}')
            times.append(time.monotonic())
            served["first"] = served["first"] or times[0]
            served["last"] = times[-1]
        if fake.mode != "no_usage":
            usage = {
                "prompt_tokens": prompt_n,
                "completion_tokens": n,
                "total_tokens": prompt_n + n,
            }
            self._event(json.dumps({"id": "cmpl-fake", "object": "text_completion",
                                    "created": 0, "model": body["model"], "choices": [],
                                    "usage": usage}))  # fmt: skip
        if times:
            fake.count(prompt_n, n, times[0] - t0, [b - a for a, b in zip(times, times[1:])])
        fake._request_ended(True)  # before [DONE]: the client's next request may follow at once
        self._event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        served["done"] = time.monotonic()
        return True

    def _event(self, data: str) -> None:
        raw = f"data: {data}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))

    def _cut(self) -> bool:
        """Drop the connection without a word, as a dying server does."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-s", type=float, default=0.0)
    ap.add_argument("--mode", default="ok", choices=MODES)
    args = ap.parse_args()
    fake = FakeOpenAI(mode=args.mode, delay_s=args.delay_s, port=args.port)
    print(f"fake OpenAI server listening at {fake.url}", flush=True)
    assert fake.server is not None
    fake.server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
