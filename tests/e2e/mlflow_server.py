"""The tests' MLflow tracking server is `mlgate ci`'s own (sqlite backend, 127.0.0.1, its own process group)."""

from __future__ import annotations

from mlgate.localci.mlflow_server import MlflowServer

__all__ = ["MlflowServer"]
