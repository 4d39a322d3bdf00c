#!/usr/bin/env bash
# Sets up mlgate in a private venv for the root action. Two phases, so the cache can sit between:
#   setup.sh key      -> outputs venv path, cache key, whether to use the cache and whether the venv
#                        is already on this runner (a self-hosted runner's tool cache: no restore then)
#   setup.sh install  -> builds the venv from the lock file unless it is already there, then
#                        installs mlgate itself from this action's checkout (its own ref) unless that
#                        very source is what the venv already holds (a hash of the package's files)
# The install holds a lock ($venv.lock, flock) so that two jobs on one runner never build or reinstall
# the same venv at once.
# Every dependency installs in pip's hash-checking mode: setup/lockfile.py picks the lock's entries
# (each with the sha256 of its files) for the extras asked for, and pip refuses any other file.
set -euo pipefail
action_path="${GITHUB_ACTION_PATH:?run this from the root action}"
lock="$action_path/setup/requirements.lock"
extras="${MLGATE_SETUP_EXTRAS-lint,data}"  # set but empty: the core only (the input's documented meaning)
extras="${extras// /}"
python="${MLGATE_SETUP_PYTHON:-python3}"
out="${GITHUB_OUTPUT:-/dev/null}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "::error title=mlgate setup::python interpreter '$python' not found; add actions/setup-python before this action or set the python input"
  exit 3
fi
py_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
lock_hash=$(cat "$lock" "$action_path/setup/requirements.extras" "$action_path/setup/lockfile.py" \
  "$action_path/pyproject.toml" | sha256sum | cut -c1-16)
extras_id=$(printf '%s' "$extras" | tr ',' '-')
key="mlgate-venv-${RUNNER_OS:-Linux}-$(uname -m)-py${py_version}-${extras_id:-core}-${lock_hash}"
venv="${MLGATE_VENV_ROOT:-${RUNNER_TOOL_CACHE:-$HOME/.cache}/mlgate}/${key}"

case "${1:-}" in
  key)
    use_cache=true
    # Release and tag builds never read a cache another ref could have written (cache poisoning).
    if [ "${MLGATE_SETUP_CACHE:-auto}" = "false" ] || { [ "${MLGATE_SETUP_CACHE:-auto}" = "auto" ] && \
        { [ "${GITHUB_REF_TYPE:-}" = "tag" ] || [ "${GITHUB_EVENT_NAME:-}" = "release" ]; }; }; then
      use_cache=false
    fi
    present=false
    if [ -f "$venv/.mlgate-lock" ] && [ "$(cat "$venv/.mlgate-lock")" = "$key" ]; then
      present=true
    fi
    { echo "venv=$venv"; echo "key=$key"; echo "use-cache=$use_cache"; echo "present=$present"; } >> "$out"
    ;;
  install)
    installed=false
    mkdir -p "$(dirname "$venv")"
    if command -v flock >/dev/null 2>&1; then
      exec 9>"$venv.lock"
      flock 9
    fi
    if [ ! -f "$venv/.mlgate-lock" ] || [ "$(cat "$venv/.mlgate-lock")" != "$key" ]; then
      echo "::group::mlgate: create venv $venv (extras: ${extras:-none})"
      rm -rf "$venv"
      "$python" -m venv "$venv"
      # Dependencies only, each file checked against the lock's hashes (setuptools included: it builds
      # mlgate below); mlgate itself is installed below on every run.
      "$python" "$action_path/setup/lockfile.py" select "$extras" "$venv/.mlgate-requirements.txt"
      # Byte-compiled afterwards on every core at once (compileall -j 0), not file by file as pip does:
      # the same .pyc files, in a third of the time on a 2-core runner.
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-compile \
        -r "$venv/.mlgate-requirements.txt"
      "$venv/bin/python" -m compileall -qq -j 0 "$venv/lib" >/dev/null || true
      echo "$key" > "$venv/.mlgate-lock"
      installed=true
      echo "::endgroup::"
    fi
    # The cached venv holds the dependencies; mlgate always comes from this action's own ref: reinstalled
    # unless the venv's stamp holds the hash of this very source (the package's files and pyproject.toml).
    source_hash=$(cd "$action_path" && find scripts pyproject.toml -type f \
      ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
      | xargs -0 sha256sum | sha256sum | cut -c1-32)
    if [ ! -f "$venv/.mlgate-source" ] || [ "$(cat "$venv/.mlgate-source")" != "$source_hash" ]; then
      rm -f "$venv/.mlgate-source"
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
        --force-reinstall "$action_path" >/dev/null
      echo "$source_hash" > "$venv/.mlgate-source"
    fi
    echo "$venv/bin" >> "${GITHUB_PATH:-/dev/null}"
    # From the package, not `mlgate --version`'s stdout: a step's stdout may also carry workflow commands.
    version=$("$venv/bin/python" -c 'import mlgate; print(mlgate.__version__)')
    { echo "cli=$venv/bin/mlgate"; echo "version=$version"; echo "installed=$installed"; } >> "$out"
    echo "mlgate $version ready at $venv/bin/mlgate"
    ;;
  *)
    echo "usage: setup.sh key|install" >&2
    exit 2
    ;;
esac
