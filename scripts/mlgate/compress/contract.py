"""What the compress gate needs from a candidate model, and how it gets it out of the pyfunc.

Runs in the project venv. A scikit-learn model (logged with the sklearn flavor) needs nothing from the
project: the estimator is the model. A torch model is a python_function model whose `PythonModel`
has a method `mlgate_compress()` returning a dict (the contract, documented in docs/compress.md):

    network        torch.nn.Module    the network, in eval mode, on the CPU
    features       frame -> matrix    the preprocessing: a pandas DataFrame to the float32 array the network takes
    outputs        (raw, frame) -> y  the network's raw output (NumPy) to what the pyfunc's predict returns
    train_batches  () -> iterable     optional, for prune/distill: (inputs, targets) tensor pairs of one epoch
    loss           (output, target)   optional, for prune/distill: the training loss, a scalar tensor
    student        (**kwargs) -> net  optional, for distill: builds the student from `compress.distill.student`
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate.errors import InputError
from mlgate.mlflowio import loader_failure

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

CONTRACT_METHOD = "mlgate_compress"
REQUIRED_KEYS = ("network", "features", "outputs")
OPTIONAL_KEYS = ("train_batches", "loss", "student")
CONTRACT_HINT = (
    "add a method `mlgate_compress(self)` to the model's PythonModel returning "
    "{'network': <torch.nn.Module>, 'features': <frame -> float32 array>, 'outputs': <(raw, frame) -> prediction>} "
    "(see docs/compress.md), or remove `compress` from mlgate.yaml"
)


@dataclass
class TorchSubject:
    """A torch candidate: its network and the project's preprocessing and output callables."""

    network: Any
    features: Callable[[Any], Any]
    outputs: Callable[[Any, Any], Any]
    train_batches: Callable[[], Iterable[tuple[Any, Any]]] | None = None
    loss: Callable[[Any, Any], Any] | None = None
    student: Callable[..., Any] | None = None


@dataclass
class SklearnSubject:
    """A scikit-learn candidate: the estimator, the pyfunc's predict method and the input columns."""

    estimator: Any
    predict_fn: str
    columns: list[tuple[str, str]]  # (column, "float" | "int" | "str"), from the input signature


@dataclass
class Candidate:
    """The loaded candidate: its pyfunc, where its files lie, and what the gate compresses."""

    uri: str
    local_dir: Path
    pyfunc: PyFuncModel
    subject: TorchSubject | SklearnSubject
    code_paths: list[Path] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "torch" if isinstance(self.subject, TorchSubject) else "sklearn"


SIGNATURE_KINDS = {
    "double": "float", "float": "float", "long": "int", "integer": "int", "boolean": "int",
    "string": "str",
}  # fmt: skip


def signature_columns(pyfunc: PyFuncModel, uri: str) -> list[tuple[str, str]]:
    schema = pyfunc.metadata.get_input_schema()  # type: ignore[no-untyped-call]
    if schema is None or not schema.has_input_names():
        raise InputError(
            f"{uri}: the scikit-learn model has no input signature with column names; the ONNX graph takes one "
            "input per column and needs their names and types",
            hint="log the model with a signature: mlflow.sklearn.log_model(..., signature=infer_signature(X, y))",
        )
    columns = []
    for spec in schema.inputs:
        type_name = str(getattr(getattr(spec, "type", None), "name", getattr(spec, "type", ""))).lower()
        kind = SIGNATURE_KINDS.get(type_name.replace("datatype.", ""))
        if kind is None:
            raise InputError(
                f"{uri}: input column {spec.name!r} has the signature type {type_name!r}, which the ONNX "
                "conversion does not take (numbers, booleans and strings only)",
                hint="encode the column as a number or a string before the model, or leave `compress` out",
            )
        columns.append((str(spec.name), kind))
    return columns


def load_candidate(uri: str, download_dir: Path) -> Candidate:
    """Download the candidate into `download_dir`, load it, and take out what the gate compresses."""
    import mlflow.artifacts
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    local: Path | None = None  # where the download put it, once it has
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(download_dir)))
        pyfunc = mlflow.pyfunc.load_model(str(local))
    except MlflowException as exc:
        raise InputError(
            f"cannot load the candidate {uri}: {str(exc).splitlines()[0][:300]}",
            hint="pass the model-uri output of the train step (models:/<model_id>) and the same tracking URI",
        ) from None
    except ImportError as exc:  # the loader module MLmodel names, or a library it needs
        raise loader_failure(exc, local, uri) from None
    code_dir = local / "code"
    code_paths = sorted(code_dir.iterdir()) if code_dir.is_dir() else []
    flavors = pyfunc.metadata.flavors
    if "sklearn" in flavors:
        import mlflow.sklearn

        estimator = mlflow.sklearn.load_model(str(local))
        predict_fn = str(flavors.get("python_function", {}).get("predict_fn") or "predict")
        if predict_fn not in ("predict", "predict_proba"):
            raise InputError(
                f"{uri}: the scikit-learn model's pyfunc calls {predict_fn!r}; the ONNX variant reproduces "
                "`predict` (labels) or `predict_proba` (probabilities) only",
                hint="log it with pyfunc_predict_fn='predict_proba' (scores) or 'predict', or leave `compress` out",
            )
        subject: TorchSubject | SklearnSubject = SklearnSubject(estimator, predict_fn, signature_columns(pyfunc, uri))
        return Candidate(uri, local, pyfunc, subject, code_paths)
    try:
        python_model = pyfunc.unwrap_python_model()
    except Exception:
        python_model = None
    method = getattr(python_model, CONTRACT_METHOD, None)
    if python_model is None or not callable(method):
        flavor = ", ".join(sorted(name for name in flavors if name != "python_function")) or "python_function"
        what = type(python_model).__name__ if python_model is not None else f"a {flavor} model"
        raise InputError(
            f"{uri}: {what} does not implement mlgate's compress contract (no method {CONTRACT_METHOD}()); "
            "the gate cannot take the network out of the pyfunc",
            hint=CONTRACT_HINT,
        )
    return Candidate(uri, local, pyfunc, _torch_subject(method(), uri), code_paths)


def _torch_subject(raw: Any, uri: str) -> TorchSubject:
    if not isinstance(raw, dict):
        raise InputError(f"{uri}: {CONTRACT_METHOD}() returned {type(raw).__name__}, not a dict", hint=CONTRACT_HINT)
    missing = [key for key in REQUIRED_KEYS if raw.get(key) is None]
    if missing:
        raise InputError(
            f"{uri}: {CONTRACT_METHOD}() returned no {', '.join(repr(key) for key in missing)} "
            f"(it returned the keys {sorted(raw)})",
            hint=CONTRACT_HINT,
        )
    unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise InputError(
            f"{uri}: {CONTRACT_METHOD}() returned unknown key(s) {unknown}; known: "
            f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}",
            hint="remove or rename the keys (docs/compress.md lists the contract)",
        )
    import torch

    network = raw["network"]
    if not isinstance(network, torch.nn.Module):
        raise InputError(
            f"{uri}: {CONTRACT_METHOD}()['network'] is a {type(network).__name__}, not a torch.nn.Module",
            hint=CONTRACT_HINT,
        )
    for key in ("features", "outputs", *OPTIONAL_KEYS):
        if raw.get(key) is not None and not callable(raw[key]):
            raise InputError(f"{uri}: {CONTRACT_METHOD}()[{key!r}] is not callable", hint=CONTRACT_HINT)
    return TorchSubject(
        network=network.eval().to("cpu"),
        features=raw["features"],
        outputs=raw["outputs"],
        train_batches=raw.get("train_batches"),
        loss=raw.get("loss"),
        student=raw.get("student"),
    )
