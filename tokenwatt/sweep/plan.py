"""Sweeps: expand a sweep config into cases, skip the finished ones, run the rest, summarise.

A sweep config is a run config in which some fields are lists:

    precision: [fp32, bf16]            # top-level model, precision, compile, device
    workload: {batch_size: [1, 8]}     # and any workload field
    cases:                             # optional: an explicit list of (sub-)grids
      - {precision: int8-weight, workload: {batch_size: 1}}
    agent: {turns: 4, system_tokens: 512, user_tokens: 64, reply_tokens: 128}   # optional
    slurm: {partition: gpu, time_limit: 60}   # optional: --executor slurm's settings

Without `cases:` the lists expand into their full product (first key outermost). With
`cases:`, each entry is merged over the base and expanded on its own, and the sweep is the
union, so grids that are not full products are easy to write. `agent:` turns one request of
several turns into one case per turn (see `agent_turns`). Each case is identified by
`config.case_id` of its resolved config; a case written twice runs once, and the sweep says so
in one line (`rounds: N` is how to run cases several times). The `slurm:` block is checked
here, for a local sweep too (sweep/slurm_options.py).

Resuming: a case is complete when summary.csv holds a row with its case_id (the case process
writes that row last, after all its trial rows); a case failed when results.csv holds a
status=failed row for it and it is not complete. A rerun skips both (`retry_failed` reruns
the failed ones, `force` reruns everything). The sweep itself only plans and collects: the
executor runs each case in its own process, which writes its own rows.

Rounds: a fresh process is the unit of replication, so a comparison needs each case run
several times. `rounds: N` runs every case N times, and `order: interleaved` (the default
with rounds) runs them round by round, every case once per round in an order shuffled anew
each round (seeded by `order_seed`, default 0): cases compared with each other are measured
close together in time, so drift of the machine (temperature, clocks, background load) hits
both sides of a comparison alike instead of posing as an effect. `order: sequential` runs
each case N times in a row instead. A case is complete once summary.csv holds N rows for it,
so an interrupted sweep resumes in the round where it stopped.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenwatt.config import RunConfig, case_id, config_to_dict, read_yaml, validate
from tokenwatt.errors import ConfigError
from tokenwatt.sweep.slurm_options import slurm_options

SWEEP_JSON = "sweep.json"
SWEEP_YAML = "sweep.yaml"
TOP_EXPANDABLE = ("engine", "model", "precision", "compile", "device")
SWEEP_ONLY_KEYS = ("cases", "agent", "rounds", "order", "order_seed", "slurm")
ORDERS = ("interleaved", "sequential")
MAX_ROUNDS = 1000
MAX_CASES = 1000  # `tokenwatt sweep --max-cases` raises it: each case runs for minutes
MAX_TURNS = 1000


@dataclass
class Case:
    """One case of a sweep: its validated config (out = the sweep folder), validated once here
    and passed along typed; `config_dict()` is what CASE.json and sweep.json hold."""

    case_id: str
    config: RunConfig
    tags: dict[str, Any] = field(default_factory=dict)

    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    @property
    def label(self) -> str:
        c, w = self.config, self.config.workload
        parts = [c.precision, f"b{w.batch_size}", f"p{w.prompt_tokens}", f"n{w.new_tokens}"]
        if "turn" in self.tags:
            parts.append(f"turn {self.tags['turn']}")
        return f"{c.model} " + " ".join(parts)


# --- planning --------------------------------------------------------------------------------


def load_sweep(
    path: str | Path,
    out: str | None = None,
    region: str | None = None,
    pue: float | None = None,
    max_cases: int = MAX_CASES,
    on_note: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[Case]]:
    """Read a sweep YAML and expand it; `out`, `region` and `pue` override the file.
    `on_note` gets a line about the plan worth knowing (a case written twice)."""
    data = read_yaml(path)
    if out is not None:  # --out '' is refused by the validation, not ignored
        data["out"] = out
    carbon = {k: v for k, v in (("region", region), ("pue", pue)) if v is not None}
    if carbon:
        data["carbon"] = {**(data.get("carbon") or {}), **carbon}
    if (data.get("carbon") or {}).get("region"):
        from tokenwatt.analysis.carbon import resolve_region

        resolve_region(str(data["carbon"]["region"]))  # one line now, not a failed row per case
    data.setdefault("out", RunConfig().out)
    schedule_of(data, where=str(path))  # a bad rounds/order is one line now, before any case
    slurm_options(data.get("slurm"), where=str(path))  # checked for a local sweep too
    return data, plan(data, where=str(path), max_cases=max_cases, on_note=on_note)


def plan(data: dict[str, Any], where: str = "sweep", max_cases: int = MAX_CASES,
         on_note: Callable[[str], None] | None = None) -> list[Case]:  # fmt: skip
    """Every case of a sweep config, in order, duplicates removed (`on_note` is told in one
    line: a case written twice may have been meant to run twice)."""
    base = {k: v for k, v in data.items() if k not in SWEEP_ONLY_KEYS}
    entries = data.get("cases") or [{}]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: cases must be a list of mappings, e.g. - {{precision: bf16}}")
    _check_size(base, entries, data.get("agent"), where, max_cases)
    cases: dict[str, Case] = {}
    first: dict[str, str] = {}  # case id -> the entry that first made it
    repeats: list[str] = []
    for i, entry in enumerate(entries):
        merged = _merge(base, entry)
        name = f"cases[{i}]" if "cases" in data else "a point of the grid"
        for point in expand(merged, f"{where}: {name}" if "cases" in data else where):
            for cfg, tags in agent_turns(point, data.get("agent"), where):
                c = validate(cfg, where)
                cid = case_id(c)
                if cid in cases:
                    again = first[cid] if first[cid] != name else "another"
                    repeats.append(f"{name} repeats {again} ({cases[cid].label})")
                cases.setdefault(cid, Case(cid, c, tags))
                first.setdefault(cid, name)
    if repeats and on_note:
        on_note(_repeats_note(where, repeats))
    return list(cases.values())


def _repeats_note(where: str, repeats: list[str]) -> str:
    more = f" and {len(repeats) - 1} more" if len(repeats) > 1 else ""
    return (
        f"{where}: {len(repeats)} case(s) written twice run once: {repeats[0]}{more}; "
        "to run cases several times give rounds: N"
    )


def _check_size(
    base: dict[str, Any], entries: list[dict[str, Any]], agent: Any, where: str, max_cases: int
) -> None:
    """Count the cases before making any (each is validated, so a huge grid would take
    minutes only to be too big to run)."""
    n = 0
    for entry in entries:  # a product of list lengths: counting is cheap, making is not
        point = 1
        for _, values in _axes(_merge(base, entry)):
            point *= max(len(values), 1)
        n += point
    n *= _turns(agent, where) if agent else 1
    if n > max_cases:
        raise ConfigError(
            f"{where}: the grid has {n:,} cases, over the limit of {max_cases:,}; each runs "
            "for minutes in its own process, so split the sweep or pass --max-cases to allow "
            "more"
        )


def _axes(data: dict[str, Any]) -> list[tuple[tuple[str, ...], list[Any]]]:
    """(path, values) of every list-valued field a grid expands."""
    axes: list[tuple[tuple[str, ...], list[Any]]] = []
    for key, value in data.items():
        if key == "workload" and isinstance(value, dict):
            axes += [(("workload", k), v) for k, v in value.items() if isinstance(v, list)]
        elif isinstance(value, list) and key in TOP_EXPANDABLE:
            axes.append(((key,), value))
    return axes


def expand(data: dict[str, Any], where: str = "sweep") -> list[dict[str, Any]]:
    """The full product of the list-valued fields of one (sub-)config."""
    axes: list[tuple[tuple[str, ...], list[Any]]] = []
    for key, value in data.items():
        if key == "workload" and isinstance(value, dict):
            axes += [(("workload", k), v) for k, v in value.items() if isinstance(v, list)]
        elif isinstance(value, list):
            if key not in TOP_EXPANDABLE:
                raise ConfigError(
                    f"{where}: {key} is a list; only {', '.join(TOP_EXPANDABLE)} and workload "
                    "fields expand into a grid"
                )
            axes.append(((key,), value))
        elif isinstance(value, dict):
            _no_lists(value, key, where)
    for path, values in axes:
        if not values:
            raise ConfigError(f"{where}: {'.'.join(path)} is an empty list; give at least one")
    points = []
    for combo in itertools.product(*(v for _, v in axes)):
        point = _merge(data, {})
        for (path, _), v in zip(axes, combo):
            node = point
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = v
        points.append(point)
    return points


def agent_turns(
    cfg: dict[str, Any], agent: dict[str, Any] | None, where: str = "sweep"
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One case per turn of an agentic request whose context grows turn by turn.

    Turn t (1-based) prefills system + t*user + (t-1)*reply tokens and generates reply tokens:
    the whole conversation so far, as a stateless chat call without prefix caching does.
    Turns are independent measurements; the report sums them into energy per request. The
    tokens are random ids (energy depends on shapes, not on the text).
    """
    if not agent:
        return [(cfg, {})]
    turns = _turns(agent, where)
    system, user, reply = (_agent_int(agent, k, where)
                           for k in ("system_tokens", "user_tokens", "reply_tokens"))  # fmt: skip
    out = []
    request = cfg.get("name", "agent")
    for t in range(1, turns + 1):
        c = _merge(cfg, {})
        c.setdefault("workload", {})
        c["workload"]["prompt_tokens"] = system + t * user + (t - 1) * reply
        c["workload"]["new_tokens"] = reply
        c["name"] = f"{request}-turn{t}"
        out.append((c, {"request": request, "turn": t, "turns": turns}))
    return out


def _turns(agent: Any, where: str) -> int:
    turns = _agent_int(agent, "turns", where)
    if not 1 <= turns <= MAX_TURNS:
        raise ConfigError(f"{where}: agent.turns must be from 1 to {MAX_TURNS} (got {turns:,})")
    return turns


def _agent_int(agent: Any, key: str, where: str) -> int:
    value = agent.get(key) if isinstance(agent, dict) else None
    if type(value) is not int:  # 1e9 is a float, true a bool: neither counts turns
        raise ConfigError(
            f"{where}: agent needs integer turns, system_tokens, user_tokens and reply_tokens"
        )
    return value


def _no_lists(d: dict[str, Any], prefix: str, where: str) -> None:
    for k, v in d.items():
        if isinstance(v, list):
            raise ConfigError(
                f"{where}: {prefix}.{k} is a list; only {', '.join(TOP_EXPANDABLE)} and "
                "workload fields expand into a grid"
            )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = {k: _merge(v, {}) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = _merge(v, {}) if isinstance(v, dict) else v
    return out


def pending(
    cases: list[Case], states: dict[str, str], force: bool, retry_failed: bool
) -> list[Case]:
    """The cases to run now."""
    if force:
        return list(cases)
    rerun = {"failed"} if retry_failed else set()
    return [c for c in cases if states.get(c.case_id) is None or states[c.case_id] in rerun]


# --- rounds and order --------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """How often and in which order the cases run: `rounds`, `order`, `order_seed`."""

    rounds: int = 1
    order: str = "planned"  # planned (no rounds given) | interleaved | sequential
    seed: int = 0


def schedule_of(data: dict[str, Any], where: str = "sweep") -> Schedule:
    rounds = data.get("rounds", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise ConfigError(f"{where}: rounds must be an integer from 1 to {MAX_ROUNDS} "
                          f"(got {rounds!r})")  # fmt: skip
    default = "interleaved" if "rounds" in data else "planned"
    order = data.get("order", default)
    if order not in ORDERS and not (order == "planned" and "order" not in data):
        raise ConfigError(f"{where}: order must be {' or '.join(ORDERS)} (got {order!r})")
    seed = data.get("order_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: order_seed must be an integer (got {seed!r})")
    return Schedule(rounds, order, seed)


def round_order(cases: list[Case], sched: Schedule, r: int) -> list[Case]:
    """The cases of round r (1-based) in the order they run."""
    if sched.order != "interleaved":
        return list(cases)
    out = list(cases)
    random.Random(f"{sched.seed}:{r}").shuffle(out)
    return out


def runs_done(out: Path) -> tuple[Counter[str], Counter[str]]:
    """(complete runs per case id, failed rows per case id), read from the folder."""
    from tokenwatt.results.columns import RESULTS_CSV
    from tokenwatt.results.folder import complete_summaries
    from tokenwatt.results.store import read_rows

    # A run of a served engine writes one summary row per window: count runs, not rows.
    runs = {(r["case_id"], r.get("run_id")) for r in complete_summaries(out)
            if r.get("case_id")}  # fmt: skip
    done = Counter(case for case, _ in runs)
    failed = Counter(r["case_id"] for r in read_rows(out / RESULTS_CSV)[0]
                     if r.get("status") == "failed" and r.get("case_id"))  # fmt: skip
    return done, failed


def batches(
    cases: list[Case],
    sched: Schedule,
    state: Callable[[], tuple[Counter[str], Counter[str]]],
    force: bool = False,
    retry_failed: bool = False,
) -> Iterator[list[Case]]:
    """The lists of cases to hand the executor, one after another, reading the folder's state
    (`state()`, e.g. runs_done) before each: a case that fails in this sweep is not tried
    again in its later rounds; one that failed before and never completed runs only with
    retry_failed or force; a resumed sweep continues where it stopped.

    Without rounds this is the one list `pending` gives. With rounds, interleaved: one list
    per round; sequential: one case at a time until it has its runs.
    """
    done0, failed0 = state()
    if sched.order == "planned":
        states = {c: "failed" for c in failed0} | {c: "complete" for c in done0}
        yield pending(cases, states, force, retry_failed)
        return
    base = Counter(done0) if force else Counter()

    def due(cid: str, r: int, done: Counter[str], failed: Counter[str]) -> bool:
        if done[cid] - base[cid] >= r or failed[cid] > failed0[cid]:
            return False  # has its runs, or failed in this sweep
        return not (failed0[cid] and not done0[cid]) or retry_failed or force

    if sched.order == "sequential":
        for case in cases:
            for r in range(1, sched.rounds + 1):
                if due(case.case_id, r, *state()):
                    yield [_in_round(case, r, sched)]
        return
    for r in range(1, sched.rounds + 1):
        done, failed = state()
        todo = [_in_round(c, r, sched) for c in round_order(cases, sched, r)
                if due(c.case_id, r, done, failed)]  # fmt: skip
        if todo:
            yield todo


def _in_round(case: Case, r: int, sched: Schedule) -> Case:
    """The case tagged with its round (recorded in run.json with the run)."""
    if sched.rounds == 1 and sched.order != "interleaved":
        return case
    return Case(case.case_id, case.config, {**case.tags, "round": r, "rounds": sched.rounds})
