"""Train the fraud MLP and log it to MLflow (run by `mlgate train`, or by hand).

    python -m fraud.train [--data-dir data]

`mlgate train` creates the MLflow run, exports MLFLOW_TRACKING_URI / MLFLOW_RUN_ID and puts the
`mlgate_runtime` helper on PYTHONPATH; `mlflow.start_run()` resumes that run. The parameters come
from the profile (`train.profiles.<name>` in mlgate.yaml, as MLGATE_PARAMS); every
parameter has a default (`TrainParams`). Logged to the run: per-epoch `train_loss`, `val_loss`,
`val_roc_auc` (step = epoch), holdout metrics on test.csv, the decision threshold, the training
throughput, and the model (an MLflow pyfunc, see `fraud.model.FraudModel`).

Under torchrun (`train.distributed` in mlgate.yaml) every rank trains a DistributedDataParallel replica
on its share of each epoch's rows, in batches of batch_size / world size, so the global batch and thus the
averaged gradient stay those of one process; rank 0 alone logs to MLflow and logs the model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from mlflow.models import infer_signature
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fraud.features import FEATURES, LABEL, NUMERIC_FEATURES
from fraud.model import FraudMLP, FraudModel, Preprocessor, check_features

if TYPE_CHECKING:
    from mlgate_runtime import TrainContext

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

PACKAGE_DIR = Path(__file__).resolve().parent
"""src/fraud: shipped with the model (code_paths) so it loads in a fresh process."""


class TrainError(Exception):
    """A problem with the inputs of the training run (reported as one line, exit status 2)."""


@dataclass(frozen=True)
class TrainParams:
    """The training parameters; a profile's `params` override any of them."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3  # AdamW
    weight_decay: float = 0.05  # AdamW's decoupled weight decay
    hidden: tuple[int, ...] = (32, 16)  # sizes of the hidden layers; () is a logistic regression
    dropout: float = 0.2
    max_rows: int | None = None  # seeded subsample of train.csv (the quick profile); None: all rows
    val_fraction: float = 0.2  # stratified, seeded; per-epoch metrics and the decision threshold
    pos_weight: float = 5.0  # weight of the positive class in the loss (~2% positives)
    threads: int = 1  # torch CPU threads (0: torch's default); more only slow this small MLP down

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> TrainParams:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TrainError(f"unknown training parameter(s) {unknown}; known: {sorted(known)}")
        values = {**asdict(cls()), **raw}
        try:
            hidden = values["hidden"]
            hidden = (hidden,) if isinstance(hidden, int) else hidden
            params = cls(
                epochs=int(values["epochs"]),
                batch_size=int(values["batch_size"]),
                lr=float(values["lr"]),
                weight_decay=float(values["weight_decay"]),
                hidden=tuple(int(size) for size in hidden),
                dropout=float(values["dropout"]),
                max_rows=None if values["max_rows"] is None else int(values["max_rows"]),
                val_fraction=float(values["val_fraction"]),
                pos_weight=float(values["pos_weight"]),
                threads=int(values["threads"]),
            )
        except (TypeError, ValueError) as error:
            raise TrainError(f"invalid training parameters {dict(raw)}: {error}") from error
        problems = [
            name
            for name, ok in (
                ("epochs >= 1", params.epochs >= 1),
                ("batch_size >= 1", params.batch_size >= 1),
                ("lr > 0", params.lr > 0),
                ("weight_decay >= 0", params.weight_decay >= 0),
                ("hidden sizes >= 1", all(size >= 1 for size in params.hidden)),
                ("0 <= dropout < 1", 0 <= params.dropout < 1),
                ("max_rows >= 100", params.max_rows is None or params.max_rows >= 100),
                ("0 < val_fraction < 1", 0 < params.val_fraction < 1),
                ("pos_weight > 0", params.pos_weight > 0),
                ("threads >= 0", params.threads >= 0),
            )
            if not ok
        ]
        if problems:
            raise TrainError(f"invalid training parameters: need {', '.join(problems)}")
        return params

    @classmethod
    def mlflow_params(cls, raw: Mapping[str, Any]) -> dict[str, str]:
        """Every parameter, defaults included, written as `mlgate train` writes a profile's params.

        mlgate logs the profile's params itself (text as is, anything else as JSON); logging the
        same value again is a no-op for MLflow, while another spelling ("1.0" for 1) is an error.
        """
        defaults = {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(cls()).items()}
        return {name: v if isinstance(v, str) else json.dumps(v) for name, v in {**defaults, **raw}.items()}


def read_split(data_dir: Path, name: str) -> pd.DataFrame:
    path = data_dir / name
    if not path.is_file():
        raise TrainError(f"{path}: no such file (run `dvc pull`, or `dvc repro` to generate the data)")
    frame = pd.read_csv(path)
    if LABEL not in frame.columns:
        raise TrainError(f"{path}: no label column {LABEL!r} (columns: {list(frame.columns)})")
    try:
        check_features(frame)
    except ValueError as error:
        raise TrainError(f"{path}: {error}") from error
    if frame[LABEL].isna().any() or not frame[LABEL].isin([0, 1]).all():
        raise TrainError(f"{path}: the label {LABEL!r} must be 0 or 1 in every row")
    if frame[LABEL].nunique() < 2:
        raise TrainError(f"{path}: the label {LABEL!r} needs both classes")
    return frame


def subsample(frame: pd.DataFrame, max_rows: int | None, rng: np.random.Generator) -> pd.DataFrame:
    if max_rows is None or max_rows >= len(frame):
        return frame
    keep = np.sort(rng.choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[keep].reset_index(drop=True)


def stratified_split(
    labels: IntArray, fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Row indices (train, validation): `fraction` of each class goes to validation."""
    train_parts: list[IntArray] = []
    val_parts: list[IntArray] = []
    for cls in (0, 1):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, round(len(rows) * fraction))
        val_parts.append(rows[:n_val])
        train_parts.append(rows[n_val:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def best_f1_threshold(labels: IntArray, probabilities: FloatArray) -> float:
    """The probability threshold (predict fraud at >= it) that maximises F1 on these rows."""
    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def holdout_metrics(labels: IntArray, probabilities: FloatArray, threshold: float) -> dict[str, float]:
    predicted = (probabilities >= threshold).astype(np.int64)
    return {
        "holdout_roc_auc": float(roc_auc_score(labels, probabilities)),
        "holdout_pr_auc": float(average_precision_score(labels, probabilities)),
        "holdout_f1": float(f1_score(labels, predicted, zero_division=0)),
        "holdout_precision": float(precision_score(labels, predicted, zero_division=0)),
        "holdout_recall": float(recall_score(labels, predicted, zero_division=0)),
        "holdout_accuracy": float(accuracy_score(labels, predicted)),
    }


def input_example(frame: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first rows of the features, with the dtypes of the CSV files (text as `object`).

    The signature inferred from it declares the integer columns as `long` and the money columns
    as `double`: MLflow validates served inputs against it and refuses int64 where it declares
    double, so it must match what callers send, which is what the data files hold.
    """
    example = frame.loc[:, list(FEATURES)].head(rows).reset_index(drop=True)
    text = [column for column in FEATURES if column not in NUMERIC_FEATURES]
    return example.astype(dict.fromkeys(text, object))


def pip_requirements() -> list[str]:
    """Pinned requirements of the served model (no slow inference; local `+cpu` tags dropped)."""
    requirements = []
    for package in ("mlflow", "torch", "numpy", "pandas", "cloudpickle"):
        try:
            requirements.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Split:
    """The (subsampled) training frame, split into the rows fitted on and the validation rows."""

    fit: pd.DataFrame
    val: pd.DataFrame
    preprocessor: Preprocessor

    @property
    def fit_labels(self) -> IntArray:
        return self.fit[LABEL].to_numpy(dtype=np.int64)

    @property
    def val_labels(self) -> IntArray:
        return self.val[LABEL].to_numpy(dtype=np.int64)


def split(train_frame: pd.DataFrame, params: TrainParams, seed: int) -> Split:
    """Subsample (max_rows), split off the validation rows and fit the preprocessor, all seeded."""
    rng = np.random.default_rng(seed)
    frame = subsample(train_frame, params.max_rows, rng)
    fit_rows, val_rows = stratified_split(frame[LABEL].to_numpy(dtype=np.int64), params.val_fraction, rng)
    fit_frame, val_frame = frame.iloc[fit_rows], frame.iloc[val_rows]
    return Split(fit_frame, val_frame, Preprocessor.fit(fit_frame))


EpochCallback = Callable[[int, dict[str, float]], None]


def fit(
    data: Split, params: TrainParams, ctx: TrainContext, device: torch.device, on_epoch: EpochCallback
) -> tuple[FraudModel, float]:
    """Train the MLP; call `on_epoch(epoch, metrics)` after each epoch (epochs count from 1).

    Returns the model (threshold still unset: 0.5) and the seconds spent in the training loop
    proper (forward, backward, optimiser steps; no validation). Under torchrun each rank fits its
    share of every epoch's rows (the same seeded permutation on every rank, each taking every
    world_size-th row), with its own dropout masks (its own seed, `ctx.seed`).
    """
    x_fit = torch.from_numpy(data.preprocessor.transform(data.fit)).to(device)
    y_fit = torch.from_numpy(data.fit_labels.astype(np.float32)).to(device)
    x_val = torch.from_numpy(data.preprocessor.transform(data.val)).to(device)
    y_val = torch.from_numpy(data.val_labels.astype(np.float32)).to(device)
    world, rank = ctx.world_size, ctx.rank
    n_used = len(y_fit) - len(y_fit) % world  # every rank the same number of rows (and batches)
    batch_size = max(1, params.batch_size // world)

    torch.manual_seed(ctx.base_seed)  # the initial weights depend on the declared seed alone, on every rank
    module = FraudMLP(data.preprocessor.n_outputs, params.hidden, params.dropout).to(device)
    if ctx.distributed:
        torch.manual_seed(ctx.seed)  # each rank its own dropout masks, reproducibly
    network: nn.Module = (
        DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        if ctx.distributed
        else module
    )
    optimizer = torch.optim.AdamW(network.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(params.pos_weight, device=device))
    # CPU generator, the declared seed: the batch order is device-independent and the same on every rank.
    shuffle = torch.Generator().manual_seed(ctx.base_seed)

    train_seconds = 0.0
    for epoch in range(1, params.epochs + 1):
        network.train()
        order = torch.randperm(len(y_fit), generator=shuffle)[:n_used][rank::world].to(device)
        loss_sum = torch.zeros((), device=device)
        _sync(device)
        started = time.perf_counter()
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = loss_fn(network(x_fit[batch]), y_fit[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
        _sync(device)
        train_seconds += time.perf_counter() - started
        train_loss = ctx.reduce(loss_sum, op="sum") / n_used  # every rank's rows

        module.eval()
        with torch.inference_mode():
            val_logits = module(x_val)
            val_loss = float(loss_fn(val_logits, y_val))
        if ctx.is_main:
            on_epoch(
                epoch,
                {
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_roc_auc": float(roc_auc_score(data.val_labels, val_logits.cpu().numpy())),
                },
            )
    model = FraudModel(
        data.preprocessor,
        module.state_dict(),
        params.hidden,
        params.dropout,
        threshold=0.5,
        logit_offset=FraudModel.pos_weight_offset(params.pos_weight),
    )
    return model, train_seconds


def train(
    ctx: TrainContext,
    params: TrainParams,
    train_frame: pd.DataFrame,
    test_frame: pd.DataFrame,
    raw_params: Mapping[str, Any],
) -> None:
    """Fit, evaluate and log one model into the active (or resumed) MLflow run; under torchrun every rank
    fits, rank 0 alone opens the run and logs."""
    data = split(train_frame, params, ctx.base_seed)  # the same rows on every rank
    device = torch.device(ctx.device)
    if params.threads > 0:
        torch.set_num_threads(params.threads)
    n_fit = len(data.fit)
    with mlflow.start_run() if ctx.is_main else contextlib.nullcontext():
        if ctx.is_main:
            mlflow.log_params(
                {
                    **TrainParams.mlflow_params(raw_params),
                    "train_rows": str(n_fit),
                    "val_rows": str(len(data.val)),
                    "holdout_rows": str(len(test_frame)),
                    "n_inputs": str(data.preprocessor.n_outputs),
                }
            )
        print(
            f"fraud.train: profile {ctx.profile}, seed {ctx.seed}, device {device}, rank {ctx.rank} of "
            f"{ctx.world_size}, {n_fit} train rows, {len(data.val)} validation rows, "
            f"{len(test_frame)} holdout rows"
        )

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=epoch)
            print(f"epoch {epoch}/{params.epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

        model, train_seconds = fit(data, params, ctx, device, log_epoch)
        if not ctx.is_main:
            return
        model.threshold = best_f1_threshold(data.val_labels, model.predict_proba(data.val))
        holdout = holdout_metrics(
            test_frame[LABEL].to_numpy(dtype=np.int64), model.predict_proba(test_frame), model.threshold
        )
        n_used = n_fit - n_fit % ctx.world_size  # the rows every rank together fitted on, each epoch
        samples_per_second = n_used * params.epochs / train_seconds if train_seconds > 0 else 0.0

        example = input_example(data.fit)
        with warnings.catch_warnings():  # integer columns are declared `long` on purpose (input_example)
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            signature = infer_signature(example, model.predict(None, example))
        model_info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=signature,
            input_example=example,
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=pip_requirements(),
            metadata={"decision_threshold": model.threshold, "output": "fraud_probability"},
            tags={"decision_threshold": f"{model.threshold:.6f}"},
        )
        final = {
            **holdout,
            "decision_threshold": model.threshold,
            "train_seconds": train_seconds,
            "train_samples_per_second": samples_per_second,
        }
        mlflow.log_metrics(final, model_id=model_info.model_id)
        print(
            "holdout: "
            + "  ".join(f"{name.removeprefix('holdout_')} {value:.4f}" for name, value in holdout.items())
            + f"  (threshold {model.threshold:.4f}; {train_seconds:.2f} s training, "
            f"{samples_per_second:,.0f} samples/s)"
        )
        print(f"model: {model_info.model_uri}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraud.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", type=Path, help="folder of train.csv, test.csv")
    args = parser.parse_args(argv)
    try:
        from mlgate_runtime import setup
    except ImportError:
        print(
            "error: cannot import mlgate_runtime: run under `mlgate train`, which provides it "
            "(or put mlgate's _runtime folder on PYTHONPATH)",
            file=sys.stderr,
        )
        return 2
    ctx = setup()
    try:
        params = TrainParams.from_mapping(ctx.params)
        train_frame = read_split(args.data_dir, "train.csv")
        test_frame = read_split(args.data_dir, "test.csv")
    except TrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    train(ctx, params, train_frame, test_frame, ctx.params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
