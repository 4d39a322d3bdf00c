#!/usr/bin/env bash
# Fills or checks $GITHUB_WORKSPACE[/path] without any network access; see action.yml here.
set -euo pipefail
ws="${GITHUB_WORKSPACE:?GITHUB_WORKSPACE is not set}"
src="${MLGATE_STANDIN_CHECKOUT_SOURCE:-}"

if [ -n "${STANDIN_REPOSITORY:-}" ] && [ "$STANDIN_REPOSITORY" != "${GITHUB_REPOSITORY:-}" ]; then
  echo "::warning::checkout stand-in: repository '$STANDIN_REPOSITORY' requested; offline only the repository act runs on (${GITHUB_REPOSITORY:-?}) is available, using it"
fi
if [ -n "${STANDIN_REF:-}" ]; then
  echo "checkout stand-in: ref '$STANDIN_REF' ignored; the copy stays at the commit act runs on"
fi
dest="$ws"
if [ -n "${STANDIN_PATH:-}" ]; then
  case "$STANDIN_PATH" in
    /*|..|../*|*/../*|*/..) echo "::error::checkout stand-in: path must stay under the workspace, got '$STANDIN_PATH'"; exit 1 ;;
  esac
  dest="$ws/${STANDIN_PATH%/}"
fi

# copy_tree SRC DEST [EXCLUDE]: tar pipe so that a DEST inside SRC works and modes are kept.
copy_tree() {
  local tmp
  tmp="$(mktemp -d)"
  tar -C "$1" ${3:+--exclude="./$3"} -cf - . | tar -C "$tmp" -xf -
  mkdir -p "$2"
  tar -C "$tmp" -cf - . | tar -C "$2" -xf -
  rm -rf "$tmp"
}

if [ -n "$src" ]; then
  [ -d "$src" ] || { echo "::error::checkout stand-in: MLGATE_STANDIN_CHECKOUT_SOURCE=$src is not a directory"; exit 1; }
  if [ "$dest" = "$ws" ] && [ -n "$(ls -A "$ws" 2>/dev/null)" ]; then
    echo "checkout stand-in: workspace $ws already holds files; not copying $src over them"
  else
    copy_tree "$src" "$dest"
    echo "checkout stand-in: copied $src into $dest"
  fi
elif [ -z "$(ls -A "$ws" 2>/dev/null)" ]; then
  echo "::error::checkout stand-in: the workspace $ws is empty. Either let act copy the repository (run act without --no-skip-checkout) or pass --env MLGATE_STANDIN_CHECKOUT_SOURCE=<repository dir>"
  exit 1
elif [ "$dest" != "$ws" ]; then
  copy_tree "$ws" "$dest" "${STANDIN_PATH%/}"
  echo "checkout stand-in: copied the workspace into $dest"
else
  echo "checkout stand-in: workspace $ws already holds the repository ($(find "$ws" -mindepth 1 -maxdepth 1 | wc -l) entries)"
fi

commit="$(git -C "$dest" rev-parse HEAD 2>/dev/null || echo "${GITHUB_SHA:-}")"
{
  echo "ref=${GITHUB_REF:-}"
  echo "commit=$commit"
} >> "$GITHUB_OUTPUT"
