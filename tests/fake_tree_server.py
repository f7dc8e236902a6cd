"""A server to launch with a process tree like vLLM's: the leader serves the fake OpenAI API
(tests/fake_openai.py) and has started two workers first, one in its process group and one
that left it (setsid), whose pids go to --pids. --die-at N: the leader SIGKILLs itself as the
Nth completion request arrives, a server killed mid-run.

    python tests/fake_tree_server.py --port P --pids FILE [--die-at N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai import FakeOpenAI  # noqa: E402


class DyingFake(FakeOpenAI):
    def __init__(self, die_at: int | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.die_at = die_at

    def _request_started(self, body: dict[str, Any], *rest: Any) -> None:
        super()._request_started(body, *rest)
        if len(self.bodies) == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)


def worker(leave_group: bool) -> int:
    """A child that sleeps until signalled; forked before any thread starts."""
    pid = os.fork()
    if pid:
        return pid
    if leave_group:
        os.setsid()  # out of the launcher's process group, as a detached engine would be
    while True:
        time.sleep(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pids", type=Path, required=True)
    ap.add_argument("--die-at", type=int)
    args = ap.parse_args()
    pids = {"leader": os.getpid(), "in_group": worker(False), "left_group": worker(True)}
    tmp = args.pids.with_suffix(".tmp")
    tmp.write_text(json.dumps(pids))
    tmp.rename(args.pids)  # whole or absent: the test reads it once the server is healthy
    fake = DyingFake(args.die_at, port=args.port)
    print(f"fake tree server listening at {fake.url}", flush=True)
    assert fake.server is not None
    fake.server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
