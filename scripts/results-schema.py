#!/usr/bin/env python3
"""Write docs/results-schema.md from tokenwatt/results/schema.py (run after changing a column):
python scripts/results-schema.py           # writes the page
python scripts/results-schema.py --check   # exit 1 when the committed page is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results-schema.md"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from tokenwatt.results.schema import markdown

    text = markdown()
    if "--check" in argv:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
        if current != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python scripts/results-schema.py",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
