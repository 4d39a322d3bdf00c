#!/usr/bin/env bash
# Copies the files matched by STANDIN_PATH into the local artifact directory; see action.yml.
set -euo pipefail
shopt -s nullglob dotglob globstar

art_root="${MLGATE_STANDIN_ARTIFACT_DIR:-${RUNNER_TEMP:?RUNNER_TEMP is not set}/artifacts}"
name="${STANDIN_NAME:-artifact}"
case "$name" in
  ''|*/*|*\\*|.|..|*[:\<\>\|\*\?\"]*) echo "::error::upload-artifact stand-in: invalid artifact name '$name'"; exit 1 ;;
esac
cd "${GITHUB_WORKSPACE:-$PWD}"

trim() { local s="$1"; s="${s#"${s%%[![:space:]]*}"}"; printf '%s' "${s%"${s##*[![:space:]]}"}"; }
# shellcheck disable=SC2088  # matches a literal ~ in the input, to expand it
expand_home() { case "$1" in '~') printf '%s' "$HOME" ;; '~/'*) printf '%s' "$HOME/${1#\~/}" ;; *) printf '%s' "$1" ;; esac; }

# Search path of a pattern: its leading components without glob characters (as @actions/glob).
search_path() {
  local pattern="$1" out="." part
  [[ "$pattern" == /* ]] && out="/"
  IFS='/' read -ra parts <<< "$pattern"
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    [[ "$part" == *[\*\?\[]* ]] && break
    out="${out%/}/$part"
  done
  realpath -ms "$out"
}

lca=""
declare -a includes=() excludes=()
while IFS= read -r line; do
  line="$(trim "$line")"
  [ -n "$line" ] || continue
  if [[ "$line" == '!'* ]]; then
    excludes+=("$(expand_home "$(trim "${line#!}")")")
    continue
  fi
  line="$(expand_home "$line")"
  includes+=("$line")
  sp="$(search_path "$line")"
  if [ -z "$lca" ]; then
    lca="$sp"
  else
    while [ "$sp" != "$lca" ] && [[ "$sp" != "$lca/"* ]] && [ "$lca" != "/" ]; do lca="$(dirname "$lca")"; done
  fi
done <<< "${STANDIN_PATH:-}"
[ -f "$lca" ] && lca="$(dirname "$lca")"

declare -A seen=()
declare -a files=()
add_file() {
  local f rel ex
  f="$(realpath -ms "$1")"
  [ -n "${seen[$f]:-}" ] && return 0
  rel="${f#"$lca"/}"
  [ "$lca" = "/" ] && rel="${f#/}"
  if [ "${STANDIN_INCLUDE_HIDDEN:-false}" != "true" ] && [[ "/$rel" == */.* ]]; then return 0; fi
  for ex in "${excludes[@]}"; do
    # shellcheck disable=SC2053
    [[ "$f" == $ex || "$f" == "$(realpath -ms "$ex")" || "$f" == "$(realpath -ms "$ex")"/* ]] && return 0
  done
  seen[$f]=1
  files+=("$rel")
}
for pattern in "${includes[@]}"; do
  # Unquoted on purpose: a glob pattern.
  # shellcheck disable=SC2206
  matches=($pattern)
  for m in "${matches[@]}"; do
    if [ -d "$m" ]; then
      while IFS= read -r -d '' f; do add_file "$f"; done < <(find "$m" -type f -print0)
    elif [ -f "$m" ]; then
      add_file "$m"
    fi
  done
done

if [ "${#files[@]}" -eq 0 ]; then
  msg="No files were found with the provided path: ${STANDIN_PATH}. No artifacts will be uploaded."
  case "${STANDIN_IF_NO_FILES_FOUND:-warn}" in
    error) echo "::error::upload-artifact stand-in: $msg"; exit 1 ;;
    ignore) echo "$msg" ;;
    *) echo "::warning::upload-artifact stand-in: $msg" ;;
  esac
  exit 0
fi

dest="$art_root/$name"
if [ -e "$dest" ]; then
  if [ "${STANDIN_OVERWRITE:-false}" = "true" ]; then
    rm -rf "$dest"
  else
    echo "::error::upload-artifact stand-in: an artifact named '$name' already exists in $art_root (set overwrite: true to replace it)"
    exit 1
  fi
fi
mkdir -p "$dest" "$art_root/.ids"
for rel in "${files[@]}"; do
  mkdir -p "$dest/$(dirname "$rel")"
  cp -p "$lca/$rel" "$dest/$rel"
done

# Next id = number of ids handed out so far + 1; mkdir makes taking one atomic between jobs.
id=$(( $(find "$art_root/.ids" -mindepth 1 -maxdepth 1 | wc -l) + 1 ))
until mkdir "$art_root/.ids/$id" 2>/dev/null; do id=$((id + 1)); done
printf '%s' "$name" > "$art_root/.ids/$id/name"
digest="$(cd "$dest" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
echo "Uploaded ${#files[@]} file(s) from $lca as artifact '$name' (id $id) to $dest"
{
  echo "artifact-id=$id"
  echo "artifact-url=file://$dest"
  echo "artifact-digest=$digest"
} >> "$GITHUB_OUTPUT"
