"""Fake Slurm commands on PATH, printing what the real ones print, so the Slurm executor's real
code path (subprocess, submitit, sbatch scripts) runs without a cluster: sinfo lists the
partitions it is given, sbatch --test-only accepts or refuses as told and keeps the script it
read, sbatch submits (keeps the script, prints a job id) or fails as told, scancel records."""

from __future__ import annotations

import os
from pathlib import Path

HEAD = '#!/bin/bash\nexport PATH=/usr/bin:/bin\nd="$(dirname "$0")/.."\n'
SCRIPTS = {
    "sinfo": """if [ -f "$d/sinfo_error" ]; then cat "$d/sinfo_error" >&2; exit 1; fi
cat "$d/sinfo.txt"
""",
    "sbatch": """if [ "$1" = "--test-only" ]; then
  cat > "$d/tested/$(ls "$d/tested" | wc -l).sh"
  if [ -f "$d/test_only_error" ]; then cat "$d/test_only_error" >&2; exit 1; fi
  echo "sbatch: Job 99 to start at 2026-01-01T00:00:00 using 2 processors on nodes n1" >&2
  exit 0
fi
n=$(ls "$d/submitted" | wc -l)
if [ -f "$d/submit_error" ] && [ "$n" -ge "$(cat "$d/submit_after")" ]; then
  cat "$d/submit_error" >&2; exit 1
fi
cp "$1" "$d/submitted/$n.sh"
echo "Submitted batch job $((101 + n))"
""",
    "scancel": 'echo "$@" >> "$d/cancelled"\n',
    "srun": "exit 0\n",
    "squeue": "exit 0\n",
}


class FakeSlurm:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        for sub in ("bin", "tested", "submitted"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for name, body in SCRIPTS.items():
            p = self.bin / name
            p.write_text(HEAD + body)
            p.chmod(0o755)
        self.partitions("gpu*|gpu:4|n1")

    def partitions(self, *rows: str) -> None:
        """sinfo -h -N -o '%P|%G|%n' lines: partition (* = default), GRES, node hostname."""
        (self.root / "sinfo.txt").write_text("".join(f"{r}\n" for r in rows))

    def sinfo_fails(self, text: str) -> None:
        (self.root / "sinfo_error").write_text(text + "\n")

    def test_only_fails(self, text: str) -> None:
        (self.root / "test_only_error").write_text(text + "\n")

    def submission_fails(self, text: str, after: int = 0) -> None:
        """Submissions after the first `after` fail with `text`."""
        (self.root / "submit_error").write_text(text + "\n")
        (self.root / "submit_after").write_text(str(after))

    def without(self, name: str) -> None:
        (self.bin / name).unlink()

    def scripts(self, kind: str) -> list[str]:
        """What sbatch read: kind 'tested' (--test-only) or 'submitted', in order."""
        files = sorted((self.root / kind).glob("*.sh"), key=lambda p: int(p.stem))
        return [p.read_text() for p in files]

    @property
    def cancelled(self) -> list[str]:
        p = self.root / "cancelled"
        return p.read_text().split() if p.is_file() else []

    def path(self, only: bool = False) -> str:
        return str(self.bin) if only else f"{self.bin}{os.pathsep}{os.environ['PATH']}"
