"""Writing result files safely: CSV appends, atomic JSON, the folder lock, commits, claims.

OUT/results.csv  one row per measured trial
OUT/summary.csv  one row per run of a config (mean, std, CV, 95% CI of the main figures)
OUT/run.json     {"runs": [...]}: resolved config, environment, per-trial detail and traces

Appends never truncate a finished row: rows are appended under a file lock and fsynced, so a
crash loses at most the row in flight and two processes writing one folder do not interleave.
A row whose keys are not in the existing header widens the header by an atomic rewrite (temp
+ rename). A file whose header is not tokenwatt's (no schema_version column) is never touched.
Several files that must change together (a summary row and its run.json record) change in one
`transaction`: all of it lands or none, even through a SIGKILL or a full disk.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokenwatt.errors import ResultsFolderError, WriteFailed
from tokenwatt.results.columns import SCHEMA_VERSION

LOCK_FILE = ".tokenwatt.lock"
JOURNAL = ".tokenwatt.journal"  # the undo record of a transaction in progress
MARK_COLUMN = "schema_version"  # every tokenwatt CSV has it; a file without it is foreign
# OWASP's CSV-injection list: a text cell starting with one of these runs as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """An inter-process lock on a results folder; undoes a transaction a killed writer left."""
    from filelock import FileLock

    with FileLock(str(out / LOCK_FILE), timeout=600):
        if (out / JOURNAL).exists():
            _roll_back(out)
        yield


@contextmanager
def transaction(out: Path, *names: str) -> Iterator[None]:
    """Change the files `names` of OUT as one: all or nothing (holds the folder lock).

    The undo record (old sizes, and hard links to the old files) is written before the first
    change and removed after the last; whoever takes the lock next rolls back one left behind.
    """
    with locked(out), _io_errors(out / JOURNAL):
        try:
            _write_journal(out, names)
        except BaseException:  # e.g. the disk filled while writing it: nothing changed yet
            shutil.rmtree(out / JOURNAL, ignore_errors=True)
            raise
        try:
            yield
        except BaseException:
            _roll_back(out)
            raise
        (out / JOURNAL / "sizes.json").unlink()  # disarmed: the changes stand
        shutil.rmtree(out / JOURNAL, ignore_errors=True)


def _write_journal(out: Path, names: tuple[str, ...]) -> None:
    j = out / JOURNAL
    shutil.rmtree(j, ignore_errors=True)
    j.mkdir()
    sizes: dict[str, int | None] = {}
    for name in names:
        p = out / name
        sizes[name] = p.stat().st_size if p.is_file() else None
        if sizes[name] is not None:
            try:  # a hard link keeps the old file as it is when a rewrite replaces it
                os.link(p, j / name)
            except OSError:  # a filesystem without hard links
                shutil.copy2(p, j / name)
    write_atomic(j / "sizes.json", json.dumps(sizes))  # last: its presence arms the undo


def _roll_back(out: Path) -> None:
    j = out / JOURNAL
    sizes_file = j / "sizes.json"
    if sizes_file.is_file():
        for name, size in json.loads(sizes_file.read_text(encoding="utf-8")).items():
            if size is None:
                (out / name).unlink(missing_ok=True)
                continue
            os.truncate(j / name, size)  # rows appended in place go; a rewrite left it whole
            os.replace(j / name, out / name)
    shutil.rmtree(j, ignore_errors=True)


def append_rows(path: Path, rows: Iterable[dict[str, Any]], first: list[str] | None = None) -> None:
    """Append rows to a CSV (caller holds the folder lock); widen the header when needed."""
    rows = [{MARK_COLUMN: SCHEMA_VERSION, **r} for r in rows]
    if not rows:
        return
    with _io_errors(path):
        _append(path, rows, first)


def _append(path: Path, rows: list[dict[str, Any]], first: list[str] | None) -> None:
    header = _read_header(path)
    if header and MARK_COLUMN not in header:
        raise ResultsFolderError(foreign_message(path))
    if header:
        _repair_tail(path, len(header))
    keys = _ordered_keys(rows, header or (first or []))
    if header and keys != header:
        _rewrite_with_header(path, keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="raise")
    if not header:
        w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in keys})
    if not header:  # a new file appears whole (temp + rename), never empty or headless
        write_atomic(path, buf.getvalue())
        return
    # One write(2) on an O_APPEND descriptor: a kill lands before or after it, never inside.
    data = buf.getvalue().encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    size = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:  # disk full mid-write: take the part that landed back out
        os.ftruncate(fd, size)
        raise
    finally:
        os.close(fd)


def foreign_message(
    path: Path, field: str = "out", fix: str = "move it away or give another --out"
) -> str:
    return f"{field}: {str(path)!r} is not a tokenwatt file (no {MARK_COLUMN} column); {fix}"


def _repair_tail(path: Path, n_fields: int) -> None:
    """A last record without its newline: keep it (adding the newline) when it is a whole row
    of the header, cut it when it is not (a write torn by a power cut never finished)."""
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        start = last_record_start(data)
        if is_whole_row(data[start:], n_fields):
            f.seek(0, os.SEEK_END)
            f.write(b"\r\n")  # csv's own line ending
        else:
            f.truncate(start)
        f.flush()
        os.fsync(f.fileno())


def last_record_start(data: bytes) -> int:
    """Where the last CSV record of `data` begins: after the last newline outside quotes."""
    total, after, end = data.count(b'"'), 0, len(data)
    while (nl := data.rfind(b"\n", 0, end)) >= 0:
        after += data.count(b'"', nl + 1, end)
        if (total - after) % 2 == 0:  # an even number of quotes before it: outside quotes
            return nl + 1
        end = nl
    return 0


def is_whole_row(record: bytes, n_fields: int) -> bool:
    try:
        parsed = list(csv.reader(io.StringIO(record.decode("utf-8")), strict=True))
    except (csv.Error, UnicodeDecodeError):
        return False
    return len(parsed) == 1 and len(parsed[0]) == n_fields


def update_json(path: Path, key: str, item: dict[str, Any]) -> None:
    """Append `item` to the list `key` of a JSON file, atomically (caller holds the lock)."""
    data: dict[str, Any] = {}
    with _io_errors(path):
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                data = None  # type: ignore[assignment]
            if not isinstance(data, dict) or not isinstance(data.get(key, []), list):
                raise ResultsFolderError(
                    f"out: {str(path)!r} is damaged (not a JSON object with a {key!r} list); "
                    "move it away or give another --out"
                )
        data.setdefault(key, []).append(item)
        write_atomic(path, json.dumps(clean_json(data), indent=1, default=_json_default))


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temp file + fsync + rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes 0600; keep the file's mode, or the usual 0644 for a new one
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _io_errors(path: Path) -> Iterator[None]:
    """A full or read-only disk as one line: which file, why, and that nothing was lost."""
    try:
        yield
    except OSError as e:
        raise WriteFailed(
            f"cannot write {str(path)!r} ({e.strerror or type(e).__name__}); every row "
            "written before is kept; free space or fix the folder's permissions, then rerun "
            "the same command to measure the rest"
        ) from None


def read_rows(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows and header of a CSV; two empty lists when the file is not there."""
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader), list(reader.fieldnames or [])


def _read_header(path: Path) -> list[str]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _ordered_keys(rows: list[dict[str, Any]], start: list[str]) -> list[str]:
    keys = list(start)
    seen = set(keys)
    for r in rows:
        for k in r:
            if k not in seen:
                keys.append(k)
                seen.add(k)
    return keys


def _rewrite_with_header(path: Path, keys: list[str]) -> None:
    old, _ = read_rows(path)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in old:
        w.writerow({k: r.get(k, "") for k in keys})
    write_atomic(path, buf.getvalue())


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, str) and v.startswith(FORMULA_START) and not _is_number(v):
        return "'" + v  # OWASP: a leading quote makes a spreadsheet show the text, not run it
    return v


def _is_number(s: str) -> bool:
    """Numbers read back as text (a staged row being merged) stay numbers: -0.5 is no formula."""
    try:
        float(s)
    except ValueError:
        return False
    return True


def clean_json(o: Any) -> Any:
    """NaN and infinity become null: JSON has no such numbers and pandas reads null as NaN."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean_json(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# --- claims: one live process per sweep folder, one per case ---------------------------------


class Claim:
    """An exclusive hold on a lock file for as long as this process lives (or `release`).

    flock(2) by hand rather than filelock: filelock truncates the file on every attempt, so
    the file could not say who holds it, and a one-line "held by pid N" needs exactly that.
    The kernel drops the hold when the process dies, however it dies: a claim is never stale.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        self.path.unlink(missing_ok=True)  # still held: a waiter re-checks the inode
        os.close(self.fd)
        self.fd = -1


def try_claim(path: Path, what: str, wait_s: float = 0.0) -> Claim | None:
    """Hold `path`, waiting up to wait_s while another process holds it; None if it still
    does (`holder(path)` says who)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)
            continue
        if _same_file(fd, path):  # not unlinked by a releasing holder in the meantime
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "since_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return Claim(path, fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def holder(path: Path) -> str:
    """Who holds a claim, in words: `pid 123 on host (sweep, since ...)`."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} ({info['what']}, since {info['since_utc']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
