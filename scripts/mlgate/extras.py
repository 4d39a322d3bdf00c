"""Which extra of mlgate each gate needs, and the one message a missing optional dependency becomes.

Each gate's dependencies come with an extra (`pip install 'mlgate[train]'`), so a venv may lack
what another gate needs. Importing it then raises ModuleNotFoundError somewhere deep in a gate;
`run_gate` turns that into a ToolError naming the extra to install, so no gate has to guard its
own imports.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Collection, Mapping

from mlgate.errors import ToolError

# The extra that installs everything a command needs. A command not named here needs only the core.
EXTRA_OF_COMMAND: dict[str, str] = {
    "lint": "lint",
    "validate-data": "data",
    "train": "train",
    "test-model": "test-model",
    "compress": "compress",
    "registry": "train",
    "ci": "ci",
    "serve": "serve",
    "traffic": "serve",  # `traffic up` starts two `mlgate serve`; set/status/down need only the core
    "rollout": "rollout",
}

# Top-level modules of the optional dependencies, by the extras that install them (tests check this
# against pyproject.toml). A ModuleNotFoundError for any other module is a bug, not a missing extra.
MODULES_OF_EXTRA: dict[str, frozenset[str]] = {
    "lint": frozenset({"ruff", "mypy"}),
    "data": frozenset({"great_expectations", "pandas", "numpy", "pyarrow", "scipy", "dvc"}),
    "train": frozenset({"mlflow", "sqlalchemy", "alembic", "dvc"}),
    "test-model": frozenset({"mlflow", "sqlalchemy", "alembic", "dvc", "pytest", "pandas", "numpy", "pyarrow"}),
    "compress": frozenset(
        {"mlflow", "sqlalchemy", "alembic", "dvc", "pytest", "pandas", "numpy", "pyarrow"}
        | {"onnx", "onnxruntime", "onnxscript", "skl2onnx"}
    ),
    "serve": frozenset(
        {"mlflow", "sqlalchemy", "alembic", "pandas", "numpy", "fastapi", "starlette", "uvicorn", "prometheus_client"}
    ),
    "rollout": frozenset(
        {"mlflow", "sqlalchemy", "alembic", "pandas", "numpy", "fastapi", "starlette", "uvicorn", "prometheus_client"}
        | {"scipy"}
    ),
}

# What a gate adds to the model project's own venv, beside the project's libraries: the compress gate's worker
# runs there (it loads the project's model) and needs the ONNX tools, by the frameworks that venv holds. They
# are installed when the venv is built (projenv) and checked again by the gate (compress).
COMPRESS_BASE_LIBRARIES = ["onnx>=1.17,<2", "onnxruntime>=1.20,<2"]
COMPRESS_TORCH_LIBRARIES = ["onnxscript>=0.3,<1"]
COMPRESS_PRUNE_LIBRARIES = ["torch-pruning>=1.5,<2"]
COMPRESS_SKLEARN_LIBRARIES = ["skl2onnx>=1.18,<2"]


def compress_libraries(methods: Collection[str], found: Mapping[str, bool]) -> list[str]:
    """The libraries the compress worker needs beside the project's, by `methods` (compress.methods) and which of
    torch and sklearn the project venv holds (`found`). A scikit-learn project never gets torch-pruning, which would
    pull torch into its venv."""
    wanted = list(COMPRESS_BASE_LIBRARIES)
    if found.get("torch"):
        wanted += COMPRESS_TORCH_LIBRARIES
        if "prune" in methods:
            wanted += COMPRESS_PRUNE_LIBRARIES
    if found.get("sklearn"):
        wanted += COMPRESS_SKLEARN_LIBRARIES
    return wanted


def install_command(extra: str) -> str:
    return f"pip install 'mlgate[{extra}]'"


def extra_for(command: str, module: str) -> str | None:
    """The extra that brings `module` to `command`: the command's own when it lists the module."""
    top = module.split(".", 1)[0]
    own = EXTRA_OF_COMMAND.get(command)
    if own is not None and top in MODULES_OF_EXTRA.get(own, frozenset()):
        return own
    return next((extra for extra, modules in MODULES_OF_EXTRA.items() if top in modules), None)


def missing_dependency(command: str, exc: ModuleNotFoundError) -> ToolError | None:
    """The error a user reads for `exc`, or None when the module is not an optional dependency."""
    module = exc.name or ""
    extra = extra_for(command, module)
    if extra is None:
        return None
    top = module.split(".", 1)[0]
    # Code that knows more (e.g. which store URI needed the module) says so in the exception's message.
    detail = exc.msg if exc.msg and not exc.msg.startswith(("No module named", "import of ")) else ""
    message = detail or f"mlgate {command} needs the Python package {top!r}, which is not installed in {sys.prefix}"
    return ToolError(
        message,
        hint=f"install the {extra} extra: {install_command(extra)} (or 'mlgate[all]' for every gate; "
        "in a workflow, the mlgate setup action's `extras` input)",
    )


def require(*modules: str) -> None:
    """Raise ModuleNotFoundError, as importing it would, for the first of `modules` that is not installed.

    For what mlgate runs in a subprocess of this interpreter (pytest), whose own ImportError would
    only show up in that process's output.
    """
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def run_gate(command: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`run(args)`, with a missing optional dependency reported as the extra to install."""
    try:
        return run(args)
    except ModuleNotFoundError as exc:
        error = missing_dependency(command, exc)
        if error is None:
            raise
        raise error from None
