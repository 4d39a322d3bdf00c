"""The challengers of the rollout tests: real pyfunc models, logged to MLflow, each harmful in its own way; and
how a client of the canary tells a model's failure from one the switch caused (`outcome`).

`good` scores as the champion does; `erroring` raises on a call holding a row whose amount's hundredths are
below 30 (the tests' load draws them uniformly: about 30 % of single-row requests); `slow` sleeps before
every call; `shifted` adds 0.3 to every score and never errors.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

KINDS = ("good", "erroring", "slow", "shifted")
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def outcome(port: int, body: bytes) -> str:
    """POST `body` to nginx's /invocations on `port`: "ok", "model error" (mlgate serve's 500 naming the model's
    failure), or what else the client saw (an HTTP status or a connection error: the switch's doing)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with LOCAL.open(request, timeout=30) as answer:
            answer.read()
            return "ok"
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        return "model error" if "the model failed to predict" in text else f"http {error.code}"
    except OSError as error:
        return f"connection {type(error).__name__}"


class Challenger(PythonModel):  # type: ignore[misc]
    def __init__(self, kind: str = "good", delay_s: float = 0.25, error_share: float = 0.3, shift: float = 0.3) -> None:
        assert kind in KINDS, kind
        self.kind = kind
        self.delay_s = delay_s
        self.error_share = error_share
        self.shift = shift

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        amount = model_input["amount"].to_numpy(dtype=float)
        if self.kind == "erroring":
            hundredths = np.round(amount * 100).astype(int) % 100
            if (hundredths < self.error_share * 100).any():
                raise ValueError("cannot score this amount (a broken feature transform)")
        if self.kind == "slow":
            time.sleep(self.delay_s)
        score = 1.0 / (1.0 + np.exp(-(amount - 500.0) / 200.0))
        if self.kind == "shifted":
            score = np.clip(score + self.shift, 0.0, 1.0)
        return pd.DataFrame({"score": score})


def register_challengers(
    registry: Any, loaded: Any, who: Any, rows: pd.DataFrame, kinds: tuple[str, ...]
) -> dict[str, str]:
    """Log a good model and register it as version 1, promoted to @champion; then log and register one challenger
    of each of `kinds`, each with passing model-test evidence (what offline tests saw: the canary is what
    catches what they missed). Uses MLflow's global tracking URI for the logging. Returns the versions by kind
    ("champion" for version 1)."""
    import mlflow
    from mlflow.models import infer_signature
    from mlgate.registry import operations as ops

    versions: dict[str, str] = {}
    for kind in ("champion", *kinds):
        model = Challenger("good" if kind == "champion" else kind)
        with mlflow.start_run(run_name=kind):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                code_paths=[__file__],
                signature=infer_signature(rows, Challenger().predict(None, rows)),
                input_example=rows,
                pip_requirements=["mlflow"],
            )
        champion = None if kind == "champion" else {"roc_auc": 0.80}
        evidence = ops.Evidence(
            {"passed": True, "promotable": True, "champion_version": "1" if champion else "",
             "metrics": {"candidate": {"roc_auc": 0.85}, "champion": champion}}
        )  # fmt: skip
        versions[kind] = ops.register(registry, info.model_uri, evidence, who).version
        if kind == "champion":
            assert ops.promote(loaded, registry, who).decision == "promoted"
    return versions
