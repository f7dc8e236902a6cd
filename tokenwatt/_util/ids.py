"""Identifiers written into results."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone


def new_run_id() -> str:
    """One invocation of a config: its UTC start time and a random suffix (sorts by time)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def utc_now() -> str:
    """The current time as ISO 8601 UTC to the second, as every row's timestamp_utc."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
