"""Identifiers written into results."""

from __future__ import annotations

import functools
import hashlib
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path


def new_run_id() -> str:
    """One invocation of a config: its UTC start time and a random suffix (sorts by time)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def utc_now() -> str:
    """The current time as ISO 8601 UTC to the second, as every row's timestamp_utc."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# A fixed salt: the same machine gets the same id in every folder, and the id cannot be
# looked up against a machine's own /etc/machine-id (or its hostname) without it.
MACHINE_SALT = b"tokenwatt machine_id v1\0"


@functools.lru_cache(maxsize=1)
def machine_id() -> str:
    """This machine's id in results: a salted hash of its OS install id (/etc/machine-id,
    else the hostname and a MAC address), 16 hex digits, never the name itself. Rows from many
    machines merge without colliding, and without saying where they were measured."""
    ident = b""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            ident = Path(path).read_bytes().strip()
        except OSError:
            continue
        if ident:
            break
    if not ident:
        ident = f"{socket.gethostname()}/{uuid.getnode():012x}".encode()
    return hashlib.sha256(MACHINE_SALT + ident).hexdigest()[:16]
