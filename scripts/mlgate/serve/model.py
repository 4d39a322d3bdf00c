"""The model `mlgate serve` answers with: loaded once from an MLflow URI, named, versioned and warmed up."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlgate.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.pyfunc import PyFuncModel
    from mlflow.types import Schema

# models:/name@alias, models:/name/version, models:/m-<id> (a logged model), runs:/<run_id>/<path>.
ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
LOGGED_URI = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)$")
RUN_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+)$")


@dataclass(frozen=True)
class Identity:
    """What the metrics and logs call the model: its registered name (or the URI's) and version."""

    name: str
    version: str


@dataclass
class ServedModel:
    """A loaded pyfunc with what the server checks requests against."""

    uri: str
    identity: Identity
    pyfunc: PyFuncModel
    # The input signature's columns, all of them and the required ones; empty without a column signature.
    columns: list[str] = field(default_factory=list)
    required: list[str] = field(default_factory=list)

    @property
    def input_schema(self) -> Schema | None:
        schema: Schema | None = self.pyfunc.metadata.get_input_schema()  # type: ignore[no-untyped-call]
        return schema

    def missing_columns(self, frame: pd.DataFrame) -> list[str]:
        present = {str(name) for name in frame.columns}
        return [name for name in self.required if name not in present]

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        if params:
            return self.pyfunc.predict(data, params=params)
        return self.pyfunc.predict(data)


def identify(uri: str, pyfunc: PyFuncModel, name: str | None = None) -> Identity:
    """Name and version of the model at `uri`: the registry's for models:/ URIs, else the run's or logged model's."""
    import mlflow
    from mlflow import MlflowClient

    metadata = pyfunc.metadata
    if match := ALIAS_URI.match(uri):
        found = MlflowClient().get_model_version_by_alias(match["name"], match["alias"])
        return Identity(name or match["name"], str(found.version))
    if match := VERSION_URI.match(uri):
        return Identity(name or match["name"], match["version"])
    if match := LOGGED_URI.match(uri):
        logged = mlflow.get_logged_model(match["model_id"])
        return Identity(name or logged.name, match["model_id"])
    if match := RUN_URI.match(uri):
        return Identity(name or match["path"], match["run_id"])
    # A local path or any other URI MLflow loads: named by the caller or the path, versioned by the model id.
    version = getattr(metadata, "model_id", None) or getattr(metadata, "model_uuid", None) or "unversioned"
    return Identity(name or uri.rstrip("/").rsplit("/", 1)[-1], str(version))


def signature_columns(pyfunc: PyFuncModel) -> tuple[list[str], list[str]]:
    """(all, required) input columns of the model's signature; ([], []) where it names none (tensors, no signature)."""
    schema: Schema | None = pyfunc.metadata.get_input_schema()  # type: ignore[no-untyped-call]
    if schema is None or not schema.has_input_names():
        return [], []
    inputs = schema.inputs
    return [str(spec.name) for spec in inputs], [str(spec.name) for spec in inputs if getattr(spec, "required", True)]


def download_folder(uri: str) -> str | None:
    """A new, empty folder of mlgate's own for MLflow to download the model at `uri` into, or None for a local path
    (read where it is).

    Left to itself MLflow downloads into a `tempfile.mkdtemp()` it never removes: each server start would leave a
    copy of the model behind. The folder is made in the runner's temp folder (RUNNER_TEMP, emptied after each job)
    when there is one, else in the system's (TMPDIR); the server removes it when it stops or fails to load."""
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme in ("", "file"):
        return None
    runner_temp = os.environ.get("RUNNER_TEMP", "")
    return tempfile.mkdtemp(prefix="mlgate-serve-model-", dir=runner_temp if os.path.isdir(runner_temp) else None)


def load(uri: str, name: str | None = None, dst_path: str | None = None) -> ServedModel:
    """The pyfunc at `uri` (through the tracking URI set in the process), downloaded into `dst_path` when given, or
    an InputError that says why not."""
    import mlflow
    import mlflow.pyfunc

    try:
        pyfunc = mlflow.pyfunc.load_model(uri, dst_path=dst_path)
        identity = identify(uri, pyfunc, name)
    except Exception as exc:  # any failure to resolve or load is one reason the server is not ready
        shown = mlflow.get_tracking_uri()
        from mlgate.mlflowio import redact, scrub

        first = (scrub(str(exc), shown).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(
            f"cannot load model {uri} from {redact(shown)}: {first}",
            hint="pass a URI that resolves in this tracking store: models:/<name>@<alias>, models:/<name>/<version>, "
            "models:/<model_id> or runs:/<run_id>/<path>, with --tracking-uri (or MLFLOW_TRACKING_URI)",
        ) from exc
    columns, required = signature_columns(pyfunc)
    return ServedModel(uri, identity, pyfunc, columns, required)


def warm_up_input(model: ServedModel) -> Any | None:
    """What the warm-up prediction scores: the model's input example, else one row built from its signature."""
    example = model.pyfunc.input_example
    if example is not None:
        return example
    schema = model.input_schema
    if schema is None or not schema.has_input_names():
        return None
    import pandas as pd
    from mlflow.types import ColSpec, DataType

    zero: dict[DataType, Any] = {
        DataType.boolean: False,
        DataType.integer: 0,
        DataType.long: 0,
        DataType.float: 0.0,
        DataType.double: 0.0,
        DataType.string: "",
        DataType.binary: b"",
    }
    row: dict[str, Any] = {}
    narrow: dict[str, Any] = {}
    for spec in schema.inputs:
        kind = spec.type if isinstance(spec, ColSpec) else None
        if not isinstance(kind, DataType) or kind not in zero:
            return None  # a column of an array or object type: no row can be made up for it
        row[str(spec.name)] = zero[kind]
        if kind in (DataType.float, DataType.integer):
            narrow[str(spec.name)] = kind.to_numpy()  # 32-bit columns: pandas would make them 64-bit
    return pd.DataFrame([row]).astype(narrow)
