#!/usr/bin/env python3
"""Write tokenwatt/data/preset_shapes.json: every preset's weight inventory and config, built on
the meta device, so `tokenwatt estimate`, `plan` and `floor` need not import torch for a preset
(run after adding or changing a preset; tests/test_energy_model.py checks it is current):
    python scripts/preset-shapes.py           # writes the file
    python scripts/preset-shapes.py --check   # exit 1 when it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "tokenwatt" / "data" / "preset_shapes.json"


def build() -> str:
    sys.path.insert(0, str(ROOT))
    from tokenwatt.models.inventory import meta_inventory, preset_key
    from tokenwatt.registry.presets import PRESETS

    out = {}
    for name in PRESETS:
        inventory, config = meta_inventory(f"preset:{name}")
        out[name] = {"key": preset_key(name), "inventory": inventory, "config": config}
    return json.dumps(out, indent=1, sort_keys=True, default=str) + "\n"


def main(argv: list[str]) -> int:
    text = build()
    if "--check" in argv:
        if not FILE.is_file() or FILE.read_text(encoding="utf-8") != text:
            print(f"{FILE.relative_to(ROOT)} is stale: run python scripts/preset-shapes.py",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    FILE.write_text(text, encoding="utf-8")
    print(f"wrote {FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
