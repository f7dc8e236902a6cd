"""A case written twice in a sweep runs once, and the sweep says so in one line (the user may
have meant two runs: `rounds: N` asks for that)."""

from __future__ import annotations

from tests.test_bad_input import cli_run
from tokenwatt.sweep.plan import plan

BASE = {"name": "d", "model": "preset:tiny-llama", "device": "cpu", "out": "unused"}


def notes_of(data) -> tuple[int, list[str]]:
    notes: list[str] = []
    return len(plan(data, where="s.yaml", on_note=notes.append)), notes


def test_the_same_case_twice_in_cases_is_one_case_and_a_note():
    n, notes = notes_of({**BASE, "cases": [{"precision": "fp32"}, {"precision": "fp32"}]})
    assert n == 1 and len(notes) == 1
    assert notes[0] == ("s.yaml: 1 case(s) written twice run once: cases[1] repeats cases[0] "
                        "(preset:tiny-llama fp32 b1 p128 n128); to run cases several times "
                        "give rounds: N")  # fmt: skip


def test_a_repeated_value_in_a_grid_and_overlapping_sub_grids():
    n, notes = notes_of({**BASE, "precision": ["fp32", "bf16", "fp32"]})
    assert n == 2 and "a point of the grid repeats another (preset:tiny-llama fp32" in notes[0]
    n, notes = notes_of(
        {
            **BASE,
            "cases": [
                {"precision": ["fp32", "bf16"]},
                {"precision": "fp32"},
                {"precision": "bf16"},
            ],
        }
    )
    assert (
        n == 2
        and notes[0].startswith(
            "s.yaml: 2 case(s) written twice run once: cases[1] repeats cases[0]"
        )
        and "and 1 more" in notes[0]
    )
    assert notes_of({**BASE, "precision": ["fp32", "bf16"]}) == (2, [])


def test_the_cli_says_it_in_one_line_on_stderr(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "model: preset:tiny-llama\ndevice: cpu\n"
        f"out: {tmp_path / 'o'}\ncases: [{{precision: fp32}}, {{precision: fp32}}]\n"
    )
    r = cli_run("sweep", str(cfg), "--dry-run")
    assert r.exit_code == 0 and "1 cases, 1 to run" in r.stdout, r.output
    err = r.stderr.strip()
    assert "\n" not in err and "cases[1] repeats cases[0]" in err and "rounds: N" in err
