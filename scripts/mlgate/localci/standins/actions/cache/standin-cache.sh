#!/usr/bin/env bash
# Local-directory cache behind the actions/cache stand-ins (restore, save); see action.yml here.
#
# Usage: standin-cache.sh restore|save   (inputs come from STANDIN_* environment variables)
#
# Layout: ${MLGATE_STANDIN_CACHE_DIR:-$HOME/.cache/mlgate-standin-cache}/<encoded key>/
#   workspace.tar  paths under $GITHUB_WORKSPACE, stored relative to it (so a cache made in one
#                  act workspace restores into the next one, which lives at another path)
#   home.tar       paths under $HOME (e.g. ~/.cache/pip), relative to $HOME
#   root.tar       any other absolute path, relative to /
#   key            the key in clear text
# The key is encoded with '%' -> '%25' and '/' -> '%2F' so a key is one directory and a
# restore-keys prefix is still a prefix of the encoded name.
set -euo pipefail
shopt -s nullglob dotglob globstar

cache_root="${MLGATE_STANDIN_CACHE_DIR:-$HOME/.cache/mlgate-standin-cache}"
ws="${GITHUB_WORKSPACE:-$PWD}"

encode() { local s="${1//%/%25}"; printf '%s' "${s//\//%2F}"; }

out() { echo "$1=$2" >> "${GITHUB_OUTPUT:-/dev/null}"; }

# Newest entry (by mtime of its 'key' file) whose encoded name starts with the encoded prefix.
newest_with_prefix() {
  local prefix best="" best_t=0 t d
  prefix="$(encode "$1")"
  for d in "$cache_root/$prefix"*/; do
    [ -f "$d/key" ] || continue
    t="$(stat -c %Y "$d/key")"
    if [ -z "$best" ] || [ "$t" -gt "$best_t" ]; then best="$d"; best_t="$t"; fi
  done
  [ -n "$best" ] && cat "$best/key"
}

restore() {
  local key="${STANDIN_KEY:?key is required}" matched="" line dir tarball
  out cache-primary-key "$key"
  if [ -f "$cache_root/$(encode "$key")/key" ]; then
    matched="$key"
  else
    while IFS= read -r line; do
      line="${line#"${line%%[![:space:]]*}"}"; line="${line%"${line##*[![:space:]]}"}"
      [ -n "$line" ] || continue
      if matched="$(newest_with_prefix "$line")"; then break; fi
      matched=""
    done <<< "${STANDIN_RESTORE_KEYS:-}"
  fi
  if [ -z "$matched" ]; then
    out cache-hit false
    out cache-matched-key ""
    if [ "${STANDIN_FAIL_ON_CACHE_MISS:-false}" = "true" ]; then
      echo "::error::cache stand-in: failed to restore cache entry for key '$key'. Exiting as fail-on-cache-miss is set."
      exit 1
    fi
    echo "Cache not found for input keys: $(printf '%s\n%s\n' "$key" "${STANDIN_RESTORE_KEYS:-}" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/^$/d' | paste -sd, - | sed 's/,/, /g')"
    return 0
  fi
  dir="$cache_root/$(encode "$matched")"
  if [ "${STANDIN_LOOKUP_ONLY:-false}" != "true" ]; then
    mkdir -p "$ws"
    for tarball in workspace:"$ws" home:"$HOME" root:/; do
      [ -f "$dir/${tarball%%:*}.tar" ] && tar -C "${tarball#*:}" -xf "$dir/${tarball%%:*}.tar"
    done
    echo "Cache restored from key: $matched ($dir)"
  else
    echo "Cache found (lookup-only, nothing restored) for key: $matched"
  fi
  if [ "$matched" = "$key" ]; then out cache-hit true; else out cache-hit false; fi
  out cache-matched-key "$matched"
}

save() {
  local key="${STANDIN_KEY:?key is required}" line p rel dest tmp any=0
  local -a ws_paths=() home_paths=() root_paths=() excludes=()
  dest="$cache_root/$(encode "$key")"
  if [ -f "$dest/key" ]; then
    echo "::warning::cache stand-in: Failed to save: cache entry with key '$key' already exists (a key is written once, as on GitHub)"
    return 0
  fi
  cd "$ws"
  while IFS= read -r line; do
    line="${line#"${line%%[![:space:]]*}"}"; line="${line%"${line##*[![:space:]]}"}"
    [ -n "$line" ] || continue
    # shellcheck disable=SC2088  # '~/'* matches a literal ~ in the input, to expand it
    case "$line" in
      '!'*) excludes+=("--exclude=${line#!}"); continue ;;
      '~') line="$HOME" ;;
      '~/'*) line="$HOME/${line#\~/}" ;;
    esac
    # Unquoted on purpose: the line is a glob pattern (globstar, nullglob, dotglob are on).
    # shellcheck disable=SC2206
    local -a matches=($line)
    for p in "${matches[@]}"; do
      [ -e "$p" ] || continue
      any=1
      p="$(realpath -s "$p")"
      if [ "$p" = "$ws" ] || [[ "$p" == "$ws/"* ]]; then
        rel="${p#"$ws"}"; ws_paths+=(".${rel:-/}")
      elif [ "$p" = "$HOME" ] || [[ "$p" == "$HOME/"* ]]; then
        rel="${p#"$HOME"}"; home_paths+=(".${rel:-/}")
      else
        root_paths+=(".$p")
      fi
    done
  done <<< "${STANDIN_PATH:-}"
  if [ "$any" = 0 ]; then
    echo "::warning::cache stand-in: Path Validation Error: Path(s) specified in the action for caching do(es) not exist, hence no cache is being saved."
    return 0
  fi
  mkdir -p "$cache_root"
  tmp="$(mktemp -d "$cache_root/.saving.XXXXXX")"
  [ "${#ws_paths[@]}" -gt 0 ] && tar -C "$ws" "${excludes[@]}" -cf "$tmp/workspace.tar" -- "${ws_paths[@]}"
  [ "${#home_paths[@]}" -gt 0 ] && tar -C "$HOME" "${excludes[@]}" -cf "$tmp/home.tar" -- "${home_paths[@]}"
  [ "${#root_paths[@]}" -gt 0 ] && tar -C / "${excludes[@]}" -cf "$tmp/root.tar" -- "${root_paths[@]}"
  printf '%s' "$key" > "$tmp/key"
  # Another job may have saved the same key meanwhile; the first one wins, as on GitHub.
  if mv -T "$tmp" "$dest" 2>/dev/null; then
    echo "Cache saved with key: $key ($dest)"
  else
    rm -rf "$tmp"
    echo "::warning::cache stand-in: Failed to save: cache entry with key '$key' was saved by another job meanwhile"
  fi
}

case "${1:-}" in
  restore) restore ;;
  save) save ;;
  *) echo "usage: $0 restore|save" >&2; exit 2 ;;
esac
