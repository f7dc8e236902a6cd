#!/usr/bin/env bash
# Regenerate published results folders from their committed sweep configs, on a quiet machine:
#   bash scripts/regenerate-results.sh configs/sweep-cpu-estimate-context.yaml [more configs]
# Each config's `out:` folder is removed, measured again (every round), reported, and checked:
# a folder with any contended row (another process loaded the machine) is refused, exit 1, and
# so is one `tokenwatt validate` finds inconsistent.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
[ $# -ge 1 ] || { echo "usage: $0 CONFIG.yaml [CONFIG.yaml ...]" >&2; exit 2; }
for cfg in "$@"; do
  out=$("$py" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['out'])" "$cfg")
  case "$out" in results/*) ;; *) echo "$cfg: out must be under results/ (got $out)" >&2; exit 2;; esac
  rm -rf "$out"
  # exit 1: some cases failed (e.g. fp8 on a CPU) and are kept as failed rows with their
  # reason, which the folder publishes; anything else (bad input, interrupted) stops here
  code=0; "$py" -m tokenwatt.cli sweep "$cfg" -q || code=$?
  [ "$code" -le 1 ] || exit "$code"
  "$py" -m tokenwatt.cli report "$out"
  "$py" - "$out" <<'PY'
import sys
import pandas as pd
out = sys.argv[1]
rows = pd.read_csv(f"{out}/results.csv")
ok = rows[rows["status"] == "ok"]
bad = ok[ok["contended"].astype(str).str.lower() == "true"]
if len(bad):
    why = bad["contention_reason"].dropna().iloc[0] if bad["contention_reason"].notna().any() else ""
    sys.exit(f"{out}: {len(bad)} of {len(ok)} trials are contended ({why}); the machine was "
             "not quiet: do not commit this folder, rerun on a quiet machine")
print(f"{out}: {len(ok)} trials, none contended")
PY
  "$py" -m tokenwatt.cli validate "$out"
done
