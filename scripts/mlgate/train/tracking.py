"""The MLflow side of training: open the run, read back the result, every call through one MlflowHandle
(mlgate.mlflowio: bounded retries, a ToolError naming the server).

The tracking URI usually comes from a secret. It is only ever shown redacted (no user info, no
query), and error text from the client is scrubbed of it before it is printed (mlgate.mlflowio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlgate import redaction
from mlgate.errors import ToolError
from mlgate.mlflowio import MlflowHandle, redact, scrub, with_retries

__all__ = ["OpenedRun", "finished_metrics", "logged_model_id", "open_run", "redact", "scrub", "with_retries"]


@dataclass
class OpenedRun:
    run_id: str
    experiment_id: str


def open_run(server: MlflowHandle, experiment: str, tags: dict[str, str], params: dict[str, str]) -> OpenedRun:
    """Get or create the experiment, create the run with the lineage tags and the profile's params.

    Every value mlgate writes to MLflow passes the redaction layer: a param of the profile may hold a
    URI with credentials, which the training command receives in full (MLGATE_PARAMS) but the run,
    readable by anyone with access to the experiment, does not.
    """
    tags = {key: redaction.redact(value) for key, value in tags.items()}
    params = {key: redaction.redact(value) for key, value in params.items()}
    client = server.client

    def _experiment_id() -> str:
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise ToolError(
                    f"MLflow experiment {experiment!r} is deleted on {redact(server.uri)}",
                    hint="restore it (mlflow experiments restore) or set train.experiment to another name",
                )
            return str(found.experiment_id)
        return str(client.create_experiment(experiment))

    experiment_id = server.call("getting the experiment", _experiment_id)
    run = server.call("creating the run", lambda: client.create_run(experiment_id, tags=tags))
    run_id = str(run.info.run_id)
    if params:
        from mlflow.entities import Param

        batch = [Param(key, value[:6000]) for key, value in params.items()]
        server.call("logging params", lambda: client.log_batch(run_id, params=batch))
    return OpenedRun(run_id=run_id, experiment_id=experiment_id)


def finished_metrics(server: MlflowHandle, run_id: str) -> tuple[str, dict[str, float]]:
    """The run's status and latest metric values."""
    run = server.call("reading the run", lambda: server.client.get_run(run_id))
    return str(run.info.status), {k: float(v) for k, v in run.data.metrics.items()}


def logged_model_id(server: MlflowHandle, experiment_id: str, run_id: str) -> str | None:
    """The id of the (last) model the run logged with `log_model(name=...)`, if any."""

    def _search() -> Any:
        return server.client.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )

    models = list(server.call("finding the logged model", _search))
    if not models:
        return None
    newest = max(models, key=lambda model: model.creation_timestamp or 0)
    return str(newest.model_id)
