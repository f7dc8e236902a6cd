"""Placement: where a case runs, decided in one place and read everywhere else.

- `resolve.py`: the device (`auto` = a CUDA GPU if the process that runs the code sees one,
  else the CPU; `resolve_device` is the only resolver) and the case's boards, as one
  `Placement` value with `resolved_from` (recorded in every row as `device_resolved_from`).
- `hold.py`: how many boards a case holds where an executor sends it (`Offer`, `Hold`): what
  a Slurm job asks for, what CUDA_VISIBLE_DEVICES a local case process gets.
- `match.py`: the one matcher of CUDA devices to NVML boards (`cuda_boards`).
- `nvml_ids.py`: the NVML binding and NVML-numbered board names (`nvml_uuid`).

It sits below the engines, the meters and the executors (lint-imports keeps it there), so
each of them takes the resolved value instead of deciding again.
"""

from tokenwatt.placement.hold import Hold, Offer, hold_for, local_offer, visible_for
from tokenwatt.placement.match import Board, cuda_boards, cuda_index_of, find_board
from tokenwatt.placement.resolve import (
    Placement,
    View,
    measured_boards,
    region_placement,
    resolve_device,
    resolve_placement,
)

__all__ = [
    "Board", "Hold", "Offer", "Placement", "View", "cuda_boards", "cuda_index_of",
    "find_board", "hold_for", "local_offer", "measured_boards", "region_placement",
    "resolve_device", "resolve_placement", "visible_for",
]  # fmt: skip
