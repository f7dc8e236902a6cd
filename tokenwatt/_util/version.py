"""tokenwatt's version: one place, read by the package, the CLI, the results and pyproject.toml.
`commit()` adds the git commit when tokenwatt runs from a checkout (every row records it)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"


@functools.lru_cache(maxsize=1)
def commit() -> str:
    """The commit of the checkout tokenwatt runs from, `-dirty` when the code that runs (the
    package's tracked files) is modified; results being rewritten in the same checkout do not
    count. "" for an installed package (or without git)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists() or not (root / "tokenwatt").is_dir():
        return ""
    try:
        head = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", "tokenwatt")
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}-dirty" if dirty else head


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()  # fmt: skip
