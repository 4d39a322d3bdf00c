"""The MLflow side of training: reach the server (bounded retries), open the run, read back the result.

The tracking URI usually comes from a secret. It is only ever shown redacted (no user info, no
query), and error text from the client is scrubbed of it before it is printed (mlgate.mlflowio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlgate import redaction
from mlgate.errors import ToolError
from mlgate.mlflowio import bound_requests, open_client, redact, scrub, with_retries

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["OpenedRun", "client", "finished_metrics", "logged_model_id", "open_run", "redact", "scrub", "with_retries"]


def client(uri: str) -> MlflowClient:
    # Each request fails fast: with_retries does the retrying, with a bound a user can read.
    bound_requests()
    return open_client(uri)


@dataclass
class OpenedRun:
    run_id: str
    experiment_id: str


def open_run(
    mlflow_client: MlflowClient, uri: str, experiment: str, tags: dict[str, str], params: dict[str, str]
) -> OpenedRun:
    """Get or create the experiment, create the run with the lineage tags and the profile's params.

    Every value mlgate writes to MLflow passes the redaction layer: a param of the profile may hold a
    URI with credentials, which the training command receives in full (MLGATE_PARAMS) but the run,
    readable by anyone with access to the experiment, does not.
    """
    tags = {key: redaction.redact(value) for key, value in tags.items()}
    params = {key: redaction.redact(value) for key, value in params.items()}

    def _experiment_id() -> str:
        found = mlflow_client.get_experiment_by_name(experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise ToolError(
                    f"MLflow experiment {experiment!r} is deleted on {redact(uri)}",
                    hint="restore it (mlflow experiments restore) or set train.experiment to another name",
                )
            return str(found.experiment_id)
        return str(mlflow_client.create_experiment(experiment))

    experiment_id = with_retries("getting the experiment", uri, _experiment_id)
    run = with_retries("creating the run", uri, lambda: mlflow_client.create_run(experiment_id, tags=tags))
    run_id = str(run.info.run_id)
    if params:
        from mlflow.entities import Param

        batch = [Param(key, value[:6000]) for key, value in params.items()]
        with_retries("logging params", uri, lambda: mlflow_client.log_batch(run_id, params=batch))
    return OpenedRun(run_id=run_id, experiment_id=experiment_id)


def finished_metrics(mlflow_client: MlflowClient, uri: str, run_id: str) -> tuple[str, dict[str, float]]:
    """The run's status and latest metric values."""
    run = with_retries("reading the run", uri, lambda: mlflow_client.get_run(run_id))
    return str(run.info.status), {k: float(v) for k, v in run.data.metrics.items()}


def logged_model_id(mlflow_client: MlflowClient, uri: str, experiment_id: str, run_id: str) -> str | None:
    """The id of the (last) model the run logged with `log_model(name=...)`, if any."""

    def _search() -> Any:
        return mlflow_client.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )

    models = list(with_retries("finding the logged model", uri, _search))
    if not models:
        return None
    newest = max(models, key=lambda model: model.creation_timestamp or 0)
    return str(newest.model_id)
