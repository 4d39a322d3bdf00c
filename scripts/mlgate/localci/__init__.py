"""Run a repository's own workflows on this machine under act: mlgate's offline stand-ins for GitHub's
hosted actions, a local MLflow server, and the act command that `mlgate ci`, `make demo` and the
end-to-end tests share."""

from mlgate.localci.mlflow_server import MlflowServer
from mlgate.localci.pins import PINS, PINS_BY_REPOSITORY, STANDINS_DIR, Pin, local_repository_args
from mlgate.localci.run import LocalCiRequest, LocalCiResult, LocalCiRun, export_tree, run_local_ci

__all__ = [
    "PINS",
    "PINS_BY_REPOSITORY",
    "STANDINS_DIR",
    "LocalCiRequest",
    "LocalCiResult",
    "LocalCiRun",
    "MlflowServer",
    "Pin",
    "export_tree",
    "local_repository_args",
    "run_local_ci",
]
