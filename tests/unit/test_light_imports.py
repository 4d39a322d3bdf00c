"""Commands run from mlgate's own venv, which holds only what their extra installs: no stray heavy imports."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# The import each command's run() does first, and the modules its venv does not have.
BLOCKED = (
    "numpy",
    "pandas",
    "scipy",
    "great_expectations",
    "torch",
    "mlflow",
    "fastapi",
    "uvicorn",
    "prometheus_client",
)


# Each command's module and the core module its run() imports.
GATES = {
    "modeltest": "mlgate.modeltest",
    "train": "mlgate.train",
    "lint": "mlgate.lint",
    "check": "mlgate.check",
    "ci": "mlgate.localci",
    "serve": "mlgate.serve.batching",
    "rollout": "mlgate.rollout.controller",
}


@pytest.mark.parametrize("command", list(GATES))
def test_command_and_its_gate_import_without_heavy_libraries(command: str) -> None:
    gate = GATES[command]
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        f"import mlgate.cli, mlgate.commands.{command}, {gate}\n"
        "mlgate.cli.build_parser()  # every command's arguments, as each gate's venv builds them\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_test_model_reaches_its_config_checks_without_numpy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # run_model_tests imports lazily; run it as far as the first config check with NumPy unavailable.
    config = tmp_path / "mlgate.yaml"
    config.write_text("version: 1\nproject: p\nmodel_tests: { holdout: missing, label: y }\n")
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None\n"
        "from mlgate.cli import main\n"
        f"sys.exit(main(['test-model', '--config', {str(config)!r}, '--model', 'models:/m-1', "
        "'--tracking-uri', 'sqlite:///x.db', '--no-comment']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "model_tests.holdout names source 'missing'" in done.stdout + done.stderr


def test_check_runs_to_its_verdict_without_pandas_mlflow_or_great_expectations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # `mlgate check` reads CSV headers with the csv module: a whole run, a missing column found, with
    # the heavy libraries (and pyarrow, needed for Parquet sources only) unavailable.
    (tmp_path / "train.csv").write_text("id,amount\n1,2.5\n")
    config = tmp_path / "mlgate.yaml"
    config.write_text(
        "version: 1\nproject: p\nlint: { paths: ['.'] }\ndata:\n  sources: { train: { path: train.csv } }\n"
        "  expectations: { columns: { amount: {}, country: {} } }\n"
    )
    code = (
        "import sys\n"
        f"for name in {(*BLOCKED, 'pyarrow')!r}:\n"
        "    sys.modules[name] = None\n"
        "from mlgate.cli import main\n"
        f"sys.exit(main(['check', '--config', {str(config)!r}]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "mlgate.yaml:6: error: data.expectations.columns: column 'country' is not in source 'train'" in done.stdout


def test_a_call_imports_the_module_of_its_own_command_alone() -> None:
    """Each CI step runs `mlgate <command>`: the others' modules (serve's batching, act's runner) stay unloaded,
    and `mlgate --help` still lists every command."""
    code = (
        "import contextlib, io, sys\n"
        "from mlgate.cli import COMMANDS, main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['schema', '--help'])\n"
        # mlgate.commands.arguments is the commands' shared helpers, not a command.
        "shared = {'mlgate.commands.arguments'}\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('mlgate.commands.') and m not in shared)\n"
        "assert loaded == ['mlgate.commands.schema'], loaded\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "missing = [name for name in COMMANDS if name not in out.getvalue().split('positional arguments')[-1]]\n"
        "assert not missing, missing\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
