"""Result files under damage: a row without its final newline, foreign files, formulas in
text cells, a writer killed mid-transaction, a full disk mid-append."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.errors import ResultsFolderError, WriteFailed
from tokenwatt.results import store
from tokenwatt.results.store import (
    JOURNAL,
    append_rows,
    locked,
    transaction,
    try_claim,
    update_json,
)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_whole_last_row_without_its_newline_is_kept(tmp_path):
    """An editor that strips the final newline must not cost a finished row."""
    p = tmp_path / "results.csv"
    append_rows(p, [{"run_id": "a", "x": 1}, {"run_id": "b", "x": 2}])
    p.write_bytes(p.read_bytes().rstrip(b"\r\n"))
    append_rows(p, [{"run_id": "c", "x": 3}])
    assert [r["run_id"] for r in _rows(p)] == ["a", "b", "c"]


def test_a_whole_last_row_with_a_quoted_newline_is_kept(tmp_path):
    p = tmp_path / "results.csv"
    append_rows(p, [{"run_id": "a", "text": "one\ntwo"}, {"run_id": "b", "text": 'x,"y"\nz'}])
    p.write_bytes(p.read_bytes().rstrip(b"\r\n"))
    append_rows(p, [{"run_id": "c", "text": ""}])
    assert [r["text"] for r in _rows(p)] == ["one\ntwo", 'x,"y"\nz', ""]


@pytest.mark.parametrize("cut", [5, 12, 20])
def test_a_torn_last_row_is_cut(tmp_path, cut):
    """A row torn by a power cut (too few fields, or an open quote) never finished: it goes."""
    p = tmp_path / "results.csv"
    append_rows(p, [{"run_id": "a", "text": "ok", "x": 1}])
    whole = p.read_bytes()
    torn = b'b,"half a quoted\nvalue, still open'[:cut]
    p.write_bytes(whole + torn)
    append_rows(p, [{"run_id": "c", "text": "", "x": 3}])
    assert [r["run_id"] for r in _rows(p)] == ["a", "c"]


def test_a_foreign_file_is_never_modified(tmp_path):
    p = tmp_path / "results.csv"
    p.write_bytes(b"name,score\nalice,3\nbob,4")  # someone's own file, no final newline
    before = p.read_bytes()
    with pytest.raises(ResultsFolderError, match="not a tokenwatt file"):
        append_rows(p, [{"run_id": "a"}])
    assert p.read_bytes() == before


def test_damaged_json_is_refused_not_replaced(tmp_path):
    p = tmp_path / "run.json"
    for text in ("[1, 2]", '{"runs": 5}', "{not json"):
        p.write_text(text)
        with pytest.raises(ResultsFolderError, match="damaged"):
            update_json(p, "runs", {"a": 1})
        assert p.read_text() == text


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\")", "+1+cmd", "-2+3", "@SUM(A1)",
                                  "\tx", "\rx"])  # fmt: skip
def test_formula_text_cells_are_neutralised(tmp_path, text):
    p = tmp_path / "results.csv"
    append_rows(p, [{"run_id": "r", "name": text, "neg": -0.5, "neg_text": "-0.25"}])
    row = _rows(p)[0]
    assert row["name"] == "'" + text  # OWASP: a leading quote shows the text as text
    df = pd.read_csv(p)
    assert df["neg"].iloc[0] == -0.5 and df["neg_text"].iloc[0] == -0.25  # numbers stay numbers
    append_rows(p, [row])  # read back and appended again (a merge): not quoted twice
    assert _rows(p)[1]["name"] == "'" + text


def test_transaction_rolls_back_on_error(tmp_path):
    append_rows(tmp_path / "summary.csv", [{"run_id": "a"}])
    update_json(tmp_path / "run.json", "runs", {"run_id": "a"})
    before = {n: (tmp_path / n).read_bytes() for n in ("summary.csv", "run.json")}
    with pytest.raises(RuntimeError), transaction(tmp_path, "run.json", "summary.csv", "new.csv"):
        update_json(tmp_path / "run.json", "runs", {"run_id": "b"})
        append_rows(tmp_path / "summary.csv", [{"run_id": "b", "wider": 1}])  # a rewrite
        append_rows(tmp_path / "new.csv", [{"run_id": "b"}])
        raise RuntimeError("disk gone")
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert not (tmp_path / "new.csv").exists() and not (tmp_path / JOURNAL).exists()


KILLED_MID_MERGE = """
import os, signal, sys
from pathlib import Path
from tokenwatt.results.store import append_rows, transaction, update_json
out = Path(sys.argv[1])
with transaction(out, "results.csv", "run.json", "summary.csv"):
    update_json(out / "run.json", "runs", {"run_id": "orphan"})
    append_rows(out / "results.csv", [{"run_id": "orphan"}])
    os.kill(os.getpid(), signal.SIGKILL)  # before the summary row: half a merge
"""


def test_a_transaction_left_by_a_killed_writer_is_rolled_back(tmp_path):
    """SIGKILL mid-merge leaves the journal; whoever takes the folder lock next undoes it."""
    append_rows(tmp_path / "results.csv", [{"run_id": "a"}])
    update_json(tmp_path / "run.json", "runs", {"run_id": "a"})
    before = {n: (tmp_path / n).read_bytes() for n in ("results.csv", "run.json")}
    p = subprocess.run([sys.executable, "-c", KILLED_MID_MERGE, str(tmp_path)], timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert (tmp_path / JOURNAL).exists()
    assert (tmp_path / "results.csv").read_bytes() != before["results.csv"]  # half merged
    with locked(tmp_path):
        pass
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / JOURNAL).exists()


def test_a_committed_transaction_stays(tmp_path):
    with transaction(tmp_path, "summary.csv", "run.json"):
        update_json(tmp_path / "run.json", "runs", {"run_id": "a"})
        append_rows(tmp_path / "summary.csv", [{"run_id": "a"}])
    with locked(tmp_path):
        pass
    assert len(_rows(tmp_path / "summary.csv")) == 1
    assert len(json.loads((tmp_path / "run.json").read_text())["runs"]) == 1


def test_disk_full_mid_append_takes_the_partial_row_back(tmp_path, monkeypatch):
    p = tmp_path / "results.csv"
    append_rows(p, [{"run_id": "a", "x": 1}])
    before = p.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 4:
            real_write(fd, bytes(data[:4]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(store.os, "write", half_then_full)
    with pytest.raises(WriteFailed) as e:
        append_rows(p, [{"run_id": "b", "x": 2}])
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "kept" in msg
    assert p.read_bytes() == before


def test_claims_are_exclusive_and_say_who_holds_them(tmp_path):
    lock = tmp_path / "x.lock"
    first = try_claim(lock, "sweep")
    assert first is not None
    assert try_claim(lock, "sweep") is None  # flock: even the same process is refused
    assert f"pid {os.getpid()}" in store.holder(lock) and "sweep" in store.holder(lock)
    first.release()
    assert not lock.exists()
    again = try_claim(lock, "sweep")
    assert again is not None
    again.release()
