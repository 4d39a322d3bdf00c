"""Train the churn classifier (a scikit-learn pipeline) and log it to MLflow.

    python -m churn.train [--data-dir data]

Run by `mlgate train`, which creates the MLflow run (MLFLOW_RUN_ID, resumed by
`mlflow.start_run()`) and hands over the profile's parameters through `mlgate_runtime`. By hand it
runs with defaults against whatever MLFLOW_TRACKING_URI points at.

The model is logged with the sklearn flavor and `pyfunc_predict_fn="predict_proba"`: its pyfunc
returns two columns (the classes 0 and 1), so mlgate.yaml names the churn score by index
(`model_tests.score: 1`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn.data import CATEGORICAL, FEATURES, LABEL, NUMERIC

THRESHOLD = 0.5


def build_pipeline(c: float, ignore: list[str]) -> Pipeline:
    """Scaling and one-hot encoding, then a logistic regression.

    `ignore` leaves features out of the model while keeping them in its input signature, so a
    candidate that ignores one still takes the same columns as the champion.
    """
    unknown = sorted(set(ignore) - set(FEATURES))
    if unknown:
        raise SystemExit(f"train: unknown feature(s) in `ignore`: {unknown}; features: {FEATURES}")
    numeric = [name for name in NUMERIC if name not in ignore]
    categorical = [name for name in CATEGORICAL if name not in ignore]
    encode = ColumnTransformer(
        [
            ("numeric", StandardScaler(), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    return Pipeline([("encode", encode), ("classify", LogisticRegression(C=c, max_iter=1000))])


def params_of(raw: dict[str, Any]) -> tuple[float, int | None, list[str]]:
    known = {"C", "max_rows", "ignore"}
    if unknown := sorted(set(raw) - known):
        raise SystemExit(f"train: unknown parameter(s) {unknown}; known: {sorted(known)}")
    max_rows = raw.get("max_rows")
    return float(raw.get("C", 1.0)), None if max_rows is None else int(max_rows), list(raw.get("ignore", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args(argv)
    try:
        from mlgate_runtime import setup

        ctx = setup()
        seed, raw_params = ctx.seed, ctx.params
    except ImportError:  # run by hand, outside `mlgate train`
        seed, raw_params = 0, {}
    c, max_rows, ignore = params_of(raw_params)

    train = pd.read_csv(args.data_dir / "train.csv")
    if max_rows is not None and len(train) > max_rows:
        train = train.sample(n=max_rows, random_state=seed)
    test = pd.read_csv(args.data_dir / "test.csv")
    model = build_pipeline(c, ignore).fit(train[FEATURES], train[LABEL])

    scores = model.predict_proba(test[FEATURES])[:, 1]
    labels = test[LABEL].to_numpy()
    metrics = {
        "holdout_roc_auc": float(roc_auc_score(labels, scores)),
        "holdout_pr_auc": float(average_precision_score(labels, scores)),
        "holdout_f1": float(f1_score(labels, (scores >= THRESHOLD).astype(np.int64))),
    }
    with mlflow.start_run():
        mlflow.log_metrics(metrics)
        example = train[FEATURES].head(5)
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict_proba(example)),
            input_example=example,
            pyfunc_predict_fn="predict_proba",
        )
    print(" ".join(f"{name}={value:.4f}" for name, value in metrics.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
