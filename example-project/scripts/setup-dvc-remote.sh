#!/usr/bin/env bash
# Point the DVC remote `storage` at a directory (or any DVC URL) and fill it with the data.
#
#   scripts/setup-dvc-remote.sh [REMOTE]
#
# REMOTE: the first argument, else $DVC_REMOTE_URL, else
#         ${XDG_CACHE_HOME:-$HOME/.cache}/mlgate-example/dvc-remote
#
# The URL goes to .dvc/config.local (never committed): .dvc/config only names the remote and
# holds a placeholder that cannot be written. CI jobs do the same with a variable:
#   dvc remote modify --local storage url "$DVC_REMOTE_URL"
#
# Then it fills data/: nothing to do when data/ already matches dvc.lock, else `dvc pull`
# when the remote holds this revision's data, else `dvc repro` (the generator is
# deterministic, so it reproduces the bytes recorded in dvc.lock); and `dvc push`.
# Safe to run again.
set -euo pipefail

project_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$project_root"

dvc="${DVC:-dvc}"
remote="${1:-${DVC_REMOTE_URL:-${XDG_CACHE_HOME:-$HOME/.cache}/mlgate-example/dvc-remote}}"

if [[ "$remote" != *://* ]]; then
  # A local directory: create it and store it absolute (DVC resolves a relative path in
  # config.local against .dvc/, which surprises people).
  mkdir -p "$remote"
  remote="$(cd "$remote" && pwd)"
fi

echo "DVC remote 'storage' -> $remote"
"$dvc" remote modify --local storage url "$remote"

if "$dvc" status --quiet generate 2>/dev/null; then
  echo "data/ already matches dvc.lock"
elif "$dvc" pull --quiet 2>/dev/null; then
  echo "pulled the data of dvc.lock from the remote"
else
  echo "the remote does not hold this data yet: reproducing it"
  "$dvc" repro
fi

# Fails when the data differs from dvc.lock (e.g. another numpy changed the random stream).
"$dvc" status --quiet generate || {
  echo "error: the data does not match dvc.lock; run 'dvc repro' and look at 'dvc status'" >&2
  exit 1
}
"$dvc" push
echo "done: data/ is filled and the remote holds it"
