"""What a DCGM exporter publishes, read with prometheus_client's parser, and which boards a
user's selection names. Pure: no HTTP here (remote.py fetches the pages).

NVIDIA's dcgm-exporter serves Prometheus text on each GPU node (port 9400 by default), one
series per board and field, labelled `gpu` (the board's index on its node), `UUID`, `device`,
`modelName`, `Hostname` and, under Kubernetes, `pod`, `namespace` and `container` of the pod
holding the board. The two fields tokenwatt reads:
- `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`: mJ since the driver loaded, a counter;
- `DCGM_FI_DEV_POWER_USAGE`: W, the board's reported power (a 1 s average on Ampere and
  newer), integrated only where the counter is missing.
Boards are told apart by their labels, never by their position on the page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tokenwatt.errors import MeterUnavailable

ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
POWER = "DCGM_FI_DEV_POWER_USAGE"
FIELDS = (ENERGY, POWER)
_META = tuple(f"# {kind} {name} " for kind in ("HELP", "TYPE") for name in FIELDS)
EXPORTER_INTERVAL_FLAG = "-c"  # dcgm-exporter's collection interval in ms (default 30000)


@dataclass
class Board:
    """One board as a page (or a Prometheus query) shows it: its labels and the two fields."""

    labels: dict[str, str]
    energy_mj: float | None = None
    power_w: float | None = None
    pods: list[str] = field(default_factory=list)  # every pod the exporter says holds it
    containers: dict[str, str] = field(default_factory=dict)  # pod -> its container

    @property
    def uuid(self) -> str:
        return self.labels.get("UUID", "")

    @property
    def host(self) -> str:
        return self.labels.get("Hostname", "")

    @property
    def gpu(self) -> str:
        return self.labels.get("gpu", "")

    @property
    def key(self) -> tuple[str, str]:
        """What identifies a board across pages: its UUID, unique everywhere (the Hostname
        label can be the exporter pod's name, which a restart changes); without one, its node
        and gpu label."""
        return ("", self.uuid) if self.uuid else (self.host, f"gpu{self.gpu}")

    def name(self) -> str:
        where = f" on {self.host}" if self.host else ""
        return f"gpu {self.gpu} ({self.uuid or 'no UUID'}){where}"


def boards_of(series: Iterable[tuple[str, Mapping[str, str], float]]) -> list[Board]:
    """Boards from (field name, labels, value) series, each board once, in first-seen order.
    The pod labels of a board that no pod holds are absent or empty."""
    out: dict[tuple[str, str], Board] = {}
    for name, labels, value in series:
        name = name.removesuffix("_total")  # the parser names a counter's samples *_total
        if name not in FIELDS or not math.isfinite(value):
            continue
        b = Board({k: v for k, v in labels.items() if v != ""})
        b = out.setdefault(b.key, b)
        # a board shared by pods (time-slicing) is one series per pod: one board, its pods
        pod = labels.get("pod") or ""
        if pod and pod not in b.pods:
            b.pods.append(pod)
            b.containers[pod] = labels.get("container") or ""
        if name == ENERGY:
            b.energy_mj = float(value)
        else:
            b.power_w = float(value)
    return list(out.values())


def parse_page(text: str, url: str) -> list[Board]:
    """The boards of an exporter's page; a page that is not Prometheus text is one line."""
    from prometheus_client.parser import text_string_to_metric_families

    # An exporter's page has dozens of fields per board and is read every few ms near an
    # update: only the two fields' lines (and their HELP/TYPE lines) go to the parser.
    wanted = "\n".join(line for line in text.splitlines()
                       if line.startswith(FIELDS) or line.startswith(_META))  # fmt: skip
    try:
        series = [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(wanted)
                  for s in fam.samples]  # fmt: skip
    except ValueError as e:
        raise MeterUnavailable(f"{url} is not Prometheus text ({e}); give a dcgm-exporter's "
                               "/metrics URL, e.g. http://NODE:9400/metrics") from None  # fmt: skip
    boards = boards_of(series)
    if not boards:
        raise MeterUnavailable(f"{url} publishes no {ENERGY} or {POWER}; is it a "
                               "dcgm-exporter? Add both fields to its counters CSV")  # fmt: skip
    return boards


def check_named(chosen: Sequence[Board], sel: Selection, where: str, seen: str = "") -> None:
    """Every board `--gpus` names is among those chosen."""
    missing = [x for x in sel.boards if not any(x in (b.uuid, b.gpu) for b in chosen)]
    if missing:
        more = f" (it publishes {seen})" if seen else ""
        raise MeterUnavailable(f"--gpus {','.join(missing)}: no such board at {where}{more}")


@dataclass(frozen=True)
class Selection:
    """Which boards to measure: `boards` by UUID or `gpu` label (measure.gpus), every board a
    `pod` (and `container`) holds; nothing named: every board published. `many_nodes`: the
    user named the nodes (a selector with a Hostname label), so boards of several are meant."""

    boards: tuple[str, ...] = ()
    pod: str | None = None
    container: str | None = None
    many_nodes: bool = False
    said: tuple[str, ...] = field(default=())  # the flags that made it, for messages

    def matches(self, b: Board) -> bool:
        if self.boards and b.uuid not in self.boards and b.gpu not in self.boards:
            return False
        if self.pod is not None and self.pod not in b.pods:
            return False
        if self.container is not None:  # the named pod's container (any pod's without one)
            pods = [self.pod] if self.pod is not None else b.pods
            return any(b.containers.get(p) == self.container for p in pods)
        return True


def select(boards: Sequence[Board], sel: Selection, where: str,
           every: bool = True) -> list[Board]:  # fmt: skip
    """The boards `sel` names on a page (or query) at `where`: at least one, each named board
    found (`every`; else the caller checks across its pages), and never boards of several
    nodes unless the selection names a host."""
    chosen = [b for b in boards if sel.matches(b)]
    seen = ", ".join(b.name() for b in boards[:8])
    if not chosen:
        asked = ", ".join(sel.said) or "every board"
        raise MeterUnavailable(f"{asked} matches no board at {where} (it publishes {seen}); "
                               "name boards by UUID or gpu label (--gpus), or fix "
                               "--dcgm-pod")  # fmt: skip
    if every:
        check_named(chosen, sel, where, seen)
    hosts = sorted({b.host for b in chosen})
    if len(hosts) > 1 and not sel.many_nodes:
        raise MeterUnavailable(f"the selection matches boards of {len(hosts)} nodes at {where} "
                               f"({', '.join(hosts[:6])}); name the node with "
                               "Hostname=\"...\" in the selector")  # fmt: skip
    return chosen
