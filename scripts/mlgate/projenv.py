"""The model project's own venv: built once per interpreter and dependency set, then reused.

mlgate runs from a private venv of its own; the project's code and dependencies live in a second
venv declared by `environment.install`, so that mypy sees the project's imports and training runs
with the project's libraries, without either set of packages leaking into the other.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from mlgate.config import LoadedConfig
from mlgate.errors import ConfigError, ToolError
from mlgate.extras import compress_libraries

MARKER = ".mlgate-env"
# The editable install of the project made from a checkout (_install_local): skipped while it still holds.
LOCAL_STAMP = ".mlgate-local"
# mypy's cache for the project (`mlgate lint`), kept in the venv's folder: most of it is the types of the
# venv's third-party libraries (for a torch project, about 20 s of mypy's time), valid as long as the venv is.
MYPY_CACHE = ".mlgate-mypy-cache"
# Files whose content decides what `pip install` resolves, besides those named with -r / -c.
PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py")
# What mlgate's own code needs inside the project venv: the model-test plugin runs there under pytest,
# next to the model's libraries. Ranges, not pins, so the project's own constraints decide.
GATE_REQUIREMENTS = ("pytest>=8,<10", "pydantic>=2.7,<3", "pyyaml>=6", "pandas>=2.1", "numpy>=1.26")


def venv_root() -> Path:
    """Where venvs live: MLGATE_VENV_ROOT, else the runner's tool cache, else ~/.cache/mlgate."""
    explicit = os.environ.get("MLGATE_VENV_ROOT")
    if explicit:
        return Path(explicit)
    tool_cache = os.environ.get("RUNNER_TOOL_CACHE")
    return Path(tool_cache) / "mlgate" if tool_cache else Path.home() / ".cache" / "mlgate"


def _named_files(install: list[str], constraints: str | None) -> list[str]:
    named = list(PROJECT_FILES)
    for flag, value in itertools.pairwise(install):
        if flag in ("-r", "--requirement", "-c", "--constraint"):
            named.append(value)
    if constraints:
        named.append(constraints)
    return named


def env_key(loaded: LoadedConfig) -> str:
    """A key that changes whenever the interpreter, the install arguments or the files they read change."""
    settings = loaded.model.environment
    digest = hashlib.sha256()
    # The base interpreter, not sys.executable: each gate runs from its own mlgate venv, and all of
    # them must share one project venv.
    digest.update(f"{sys.base_prefix}|{platform.python_version()}|{platform.machine()}\n".encode())
    digest.update("\0".join([*settings.install, *GATE_REQUIREMENTS]).encode() + b"\n")
    for name in _named_files(settings.install, settings.constraints):
        path = loaded.root / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<absent>")
    safe_name = "".join(c if c.isalnum() or c in "-_" else "-" for c in loaded.model.project)[:40]
    return f"project-{safe_name}-py{sys.version_info.major}.{sys.version_info.minor}-{digest.hexdigest()[:16]}"


def cache_key(loaded: LoadedConfig) -> str:
    """The key of the project venv in a CI cache (actions/cache): the venv's own key (interpreter, install
    arguments, the files they read) and the runner's OS and architecture."""
    runner = f"{os.environ.get('RUNNER_OS', platform.system())}-{os.environ.get('RUNNER_ARCH', platform.machine())}"
    return f"mlgate-{runner}-{env_key(loaded)}"


def venv_path(loaded: LoadedConfig) -> Path:
    return venv_root() / env_key(loaded)


def mypy_cache_dir(python: Path) -> Path:
    """Where `mlgate lint` keeps mypy's cache for the project venv whose interpreter is `python`."""
    return python.parent.parent / MYPY_CACHE


def mypy_cache_key(venv_cache_key: str) -> str:
    """The CI cache key of that mypy cache: the venv's own key and the version of mypy that wrote it (mlgate's)."""
    from importlib import metadata

    try:
        version = metadata.version("mypy")
    except metadata.PackageNotFoundError:
        version = "none"
    return f"{venv_cache_key}-mypy-{version}"


def is_built(venv: Path) -> bool:
    """Whether the venv at `venv` (named by its key) was built to the end: its marker holds that key, and its
    interpreter link resolves."""
    marker = venv / MARKER
    python = venv / "bin" / "python"
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == venv.name and python.is_file()


def check_env(venv: Path) -> str | None:
    """Why the venv at `venv` cannot be used as it is, or None: its interpreter still runs (a venv restored onto
    a runner whose Python moved points at nothing) and it imports the libraries every project venv holds (a
    half-restored one does not)."""
    python = venv / "bin" / "python"
    if not python.exists():  # exists() follows the link: a dangling interpreter link is missing
        return f"its interpreter {python} is missing or points at a Python that is gone"
    modules = ["pytest", "pydantic", "yaml", "pandas", "numpy"]
    return _venv_python_fails(python, ["-c", f"import {', '.join(modules)}"], venv, "its own libraries", modules)


def ensure_project_env(loaded: LoadedConfig, *, check: bool = False) -> Path | None:
    """The project venv's python, built if missing or stale; None when `environment.install` is empty.

    `check`: also run `check_env` on a venv that is already there (one just restored from a CI cache), and
    rebuild it when it fails: a venv is never used half valid."""
    settings = loaded.model.environment
    if not settings.install:
        return None
    line = loaded.line_of("environment", "install")
    if settings.constraints and not (loaded.root / settings.constraints).is_file():
        raise ConfigError(
            f"{loaded.path}: environment.constraints names {settings.constraints!r}, which does not exist",
            hint="create the constraints file or remove environment.constraints",
            file=str(loaded.path),
            line=loaded.line_of("environment", "constraints"),
        )
    key = env_key(loaded)
    venv = venv_root() / key
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Two jobs of one workflow may share a runner's tool cache: build under a lock, once.
    with open(venv.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = venv / MARKER
        if is_built(venv):
            problem = check_env(venv) if check else None
            if problem is None:
                _install_local(loaded, python)
                problem = check_project(loaded, python) if check else None
                if problem is None:
                    return python
            print(f"mlgate: the project environment {venv} is broken ({problem}): building it again", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise ToolError(f"could not create the project venv {venv}: {made.stderr.strip()[-600:]}")
        packages = [*settings.install, *GATE_REQUIREMENTS]
        shown = " ".join([*_constraint_arguments(loaded), *packages])
        print(f"mlgate: installing the project environment: pip install {shown}", flush=True)
        done = _pip_install(loaded, python, packages)
        if done.returncode != 0:
            tail = _pip_tail(done, 15)
            shutil.rmtree(venv, ignore_errors=True)
            raise ToolError(
                f"{loaded.path}: `pip install {' '.join(settings.install)}` (environment.install) failed:\n{tail}",
                hint="fix environment.install or the project's dependencies; run the same pip command locally",
                file=str(loaded.path),
                line=line,
            )
        for gate, requirements in configured_gate_packages(loaded, python):
            try:
                _add_gate_packages(loaded, python, requirements, gate)
            except ToolError as exc:  # not this gate's failure: the gate that needs them fails with it
                print(f"mlgate: warning: {exc.message.splitlines()[0]}; the {gate} gate will try again", flush=True)
        compile_venv(venv)
        marker.write_text(key + "\n", encoding="utf-8")
        _install_local(loaded, python)
    return python


# Runs in the project venv: import every top-level package of the project's own distributions (argv).
_IMPORT_PROJECT = """
import importlib, importlib.metadata as metadata, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
wanted = {norm(name) for name in sys.argv[1:]}
tops = sorted(top for top, dists in metadata.packages_distributions().items()
              if top.isidentifier() and any(norm(dist) in wanted for dist in dists))
if not tops:
    sys.exit("none of its packages is installed: " + ", ".join(sys.argv[1:]))
for top in tops:
    importlib.import_module(top)
"""


def compile_venv(venv: Path) -> None:
    """Byte-compile what pip installed with --no-compile, on every core at once (compileall -j 0): the same .pyc
    files pip writes one by one, in about a third of the time on two cores. Files already compiled are skipped;
    a file that does not compile (a package's Python 2 test data) is left, as pip leaves it."""
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "compileall", "-qq", "-j", "0", str(venv / "lib")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def project_distributions(loaded: LoadedConfig) -> list[str]:
    """The distribution names (`[project].name` of their pyproject.toml) of the project's own code that
    `environment.install` installs from the checkout."""
    names = []
    for _, target in local_targets(loaded.model.environment.install, loaded.root):
        pyproject = loaded.root / target.split("[", 1)[0] / "pyproject.toml"
        try:
            name = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("name")
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if isinstance(name, str) and name:
            names.append(name)
    return names


def check_project(loaded: LoadedConfig, python: Path) -> str | None:
    """Why the venv cannot run the project, or None: it imports the project's own packages (and so what they
    import at the top). A venv restored half-valid can pass `check_env` and still miss one of the project's
    dependencies. Nothing to check for a project that installs no code of its own from the checkout."""
    names = project_distributions(loaded)
    if not names:
        return None
    return _venv_python_fails(python, ["-c", _IMPORT_PROJECT, *names], loaded.root, "the project", names)


def _venv_python_fails(python: Path, arguments: list[str], cwd: Path, what: str, names: list[str]) -> str | None:
    """Run the venv's interpreter to import `names`; None when it does, else why (it does not run, or the last
    line of its error)."""
    try:
        done = subprocess.run(
            [str(python), *arguments], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"its interpreter {python} does not run: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"it does not import {what} ({', '.join(names)}): {last}"
    return None


def local_targets(install: list[str], root: Path) -> list[tuple[bool, str]]:
    """The project's own code among the install arguments: (editable?, path[extras]) of each local path.

    The cached venv is keyed by dependencies, not by source code nor by checkout path, so the
    project itself is (re)installed from this checkout on every run, without its dependencies.
    """
    targets: list[tuple[bool, str]] = []
    skip_next = False
    for index, token in enumerate(install):
        if skip_next:
            skip_next = False
            continue
        if token in ("-e", "--editable"):
            if index + 1 < len(install):
                targets.append((True, install[index + 1]))
            skip_next = True
            continue
        if token.startswith("-"):
            skip_next = token in ("-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url")
            continue
        path = token.split("[", 1)[0]
        if path and (path.startswith((".", "/")) or (root / path).is_dir()) and (root / path).exists():
            targets.append((False, token))
    return targets


def _local_stamp(loaded: LoadedConfig, targets: list[tuple[bool, str]]) -> str:
    """What an editable install of the project depends on: this checkout's path, the targets, and the files that
    declare the project's metadata (its packages, entry points). The code itself is read from the checkout."""
    digest = hashlib.sha256(str(loaded.root.resolve()).encode() + b"\n")
    for editable, target in targets:
        digest.update(f"{editable}|{target}\n".encode())
    for name in PROJECT_FILES:
        path = loaded.root / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"<absent>"))
    return digest.hexdigest()


def _install_local(loaded: LoadedConfig, python: Path) -> None:
    targets = local_targets(loaded.model.environment.install, loaded.root)
    if not targets:
        return
    # An editable install already made from this checkout, with the same metadata, reads the code from here:
    # installing it again changes nothing. A non-editable one is a copy of the code: always made anew.
    stamp_file = python.parent.parent / LOCAL_STAMP
    stamp = _local_stamp(loaded, targets) if all(editable for editable, _ in targets) else None
    if stamp is not None and stamp_file.is_file() and stamp_file.read_text(encoding="utf-8").strip() == stamp:
        return
    stamp_file.unlink(missing_ok=True)
    # Dependencies come from the cached venv; only the project's own code is installed here. No build
    # isolation: an isolated build would fetch setuptools on every run.
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--no-deps"]
    command += ["--force-reinstall"]
    for editable, target in targets:
        command += ["-e", target] if editable else [target]
    done = subprocess.run([*command, "--no-build-isolation"], cwd=loaded.root, capture_output=True, text=True)
    if done.returncode != 0:  # the build backend is not in the venv: let pip fetch it in isolation
        done = subprocess.run(command, cwd=loaded.root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = _pip_tail(done, 12)
        raise ToolError(
            f"{loaded.path}: installing the project itself ({' '.join(t for _, t in targets)}) failed:\n{tail}",
            hint="check the project's pyproject.toml builds with `pip install --no-deps -e .`",
            file=str(loaded.path),
            line=loaded.line_of("environment", "install"),
        )
    if stamp is not None:
        stamp_file.write_text(stamp + "\n", encoding="utf-8")


def ensure_gate_packages(loaded: LoadedConfig, python: Path, requirements: list[str], gate: str) -> None:
    """Add a gate's own libraries to the project venv, once per set (the project's constraints apply).

    Additive, not part of the venv's key: the gates that do not need them share the same venv.
    """
    if not requirements:
        return
    venv = python.parent.parent
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _add_gate_packages(loaded, python, requirements, gate):
            compile_venv(venv)


def configured_gate_packages(loaded: LoadedConfig, python: Path) -> list[tuple[str, list[str]]]:
    """The libraries that the gates `mlgate.yaml` configures add to the project venv: compress's ONNX tools.

    They are installed when the venv is built, not by the compress job afterwards, so the venv that the first
    job caches (lint, on a fresh runner) holds them, and mypy's first cache of the project already covers them
    (torch's own types import onnx and onnxscript once they are installed: about 8 s of mypy's time)."""
    if loaded.model.compress is None:
        return []
    methods = loaded.model.compress.methods
    return [("compress", compress_libraries(methods, importable(python, ["torch", "sklearn"])))]


def _add_gate_packages(loaded: LoadedConfig, python: Path, requirements: list[str], gate: str) -> bool:
    """Install `requirements` for `gate` unless its marker says they are there; the caller holds the venv's lock
    and byte-compiles when this returns True (something was installed)."""
    digest = hashlib.sha256("\0".join(sorted(requirements)).encode()).hexdigest()[:16]
    marker = python.parent.parent / f".mlgate-{gate}-{digest}"
    if marker.is_file():
        return False
    print(f"mlgate: adding the {gate} gate's libraries to the project environment: {' '.join(requirements)}")
    done = _pip_install(loaded, python, requirements)
    if done.returncode != 0:
        raise ToolError(
            f"installing the {gate} gate's libraries ({' '.join(requirements)}) into the project venv failed:\n"
            + _pip_tail(done, 15),
            hint="check that the project's constraints (environment.constraints) allow these versions",
            file=str(loaded.path),
            line=loaded.line_of("environment", "constraints") or loaded.line_of("environment"),
        )
    marker.write_text(" ".join(requirements) + "\n", encoding="utf-8")
    return True


def _constraint_arguments(loaded: LoadedConfig) -> list[str]:
    constraints = loaded.model.environment.constraints
    return ["-c", constraints] if constraints else []


def _pip_install(loaded: LoadedConfig, python: Path, packages: list[str]) -> subprocess.CompletedProcess[str]:
    """`pip install packages` into the project venv from the project root, under `environment.constraints`; pip
    does not byte-compile (compile_venv does, on every core at once)."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--no-compile"]
    command += [*_constraint_arguments(loaded), *packages]
    return subprocess.run(command, cwd=loaded.root, capture_output=True, text=True, check=False)


def _pip_tail(done: subprocess.CompletedProcess[str], lines: int) -> str:
    """The last `lines` lines pip printed (its error, else its output)."""
    return "\n".join((done.stderr or done.stdout).strip().splitlines()[-lines:])


def importable(python: Path, modules: list[str]) -> dict[str, bool]:
    """Which of `modules` the project venv can import (looked up, not imported: torch takes seconds)."""
    code = "import importlib.util as u, sys; print(' '.join(str(u.find_spec(m) is not None) for m in sys.argv[1:]))"
    done = subprocess.run([str(python), "-c", code, *modules], capture_output=True, text=True, check=False)
    found = done.stdout.split() if done.returncode == 0 else []
    return {module: index < len(found) and found[index] == "True" for index, module in enumerate(modules)}
