"""`mlgate serve`: MLflow's payload formats answered as `mlflow models serve` answers them, /predict, readiness,
the errors a client reads (a missing column, a value the signature refuses, a body too deep or too large, a
model that raises), each answered and counted, Prometheus metrics, JSON logs, and the real command on a
loopback port: ready, answering, refusing a port in use, never ready for a URI that does not resolve."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import modeltest_models
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.types import ColSpec, DataType, Schema
from mlgate import cli
from mlgate.config import ServeConfig
from mlgate.procio import stop_group
from mlgate.serve import DEFAULT_HOST
from mlgate.serve.app import Settings, create_app, read_body
from mlgate.serve.payload import DEFAULT_MAX_BODY_BYTES, PayloadError, check_values
from mlgate.statefile import free_port
from modeltest_models import Logistic
from starlette.requests import Request

ROWS = pd.DataFrame({"amount": [12.5, 480.0, 3000.0], "velocity": [1.0, 4.0, 20.0]})
READY_WITHIN_S = 120  # a bound for a stuck load, not a timing assertion


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    expected: list[float]  # what the served model's predict returns for ROWS


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A sqlite MLflow store holding `fraud` v1 (@champion), `fragile` v1, which raises above 100 rows, and
    `unsigned` v1, the same model as `fraud` logged without a signature or an input example."""
    root = tmp_path_factory.mktemp("serve-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    output = Logistic().predict(None, ROWS)
    signature = infer_signature(ROWS, output)
    for name, model in (("fraud", Logistic()), ("fragile", Logistic(output="small-batches"))):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                code_paths=[modeltest_models.__file__],
                signature=signature,
                input_example=ROWS.head(2),
                pip_requirements=["mlflow"],
            )
        version = mlflow.register_model(info.model_uri, name)
        client.set_registered_model_alias(name, "champion", version.version)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Logistic(), code_paths=[modeltest_models.__file__], pip_requirements=["mlflow"]
        )
    mlflow.register_model(info.model_uri, "unsigned")
    yield Store(uri, [float(score) for score in output["score"]])
    mlflow.set_tracking_uri(previous)


def wait_ready(client: TestClient) -> dict[str, Any]:
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        answer = client.get("/ready")
        body: dict[str, Any] = answer.json()
        if answer.status_code == 200 or (body.get("reason", "").startswith("loading") is False):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


@pytest.fixture
def served(store: Store) -> Iterator[TestClient]:
    app = create_app(Settings("models:/fraud@champion", tracking_uri=store.tracking_uri))
    with TestClient(app) as client:
        assert wait_ready(client)["ready"] is True
        yield client


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus exposition, by name and exact labels."""
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(pair.split("=", 1) for pair in line[len(name) + 1 : line.index("}")].split(","))
            if {key: value.strip('"') for key, value in found.items()} == labels:
                return float(line.rsplit(" ", 1)[1])
    return None


# --- /invocations: the formats of `mlflow models serve`, answered the same way ----------------------


PAYLOADS = {
    "dataframe_split": {"dataframe_split": ROWS.to_dict(orient="split")},
    "dataframe_records": {"dataframe_records": ROWS.to_dict(orient="records")},
    "instances": {"instances": ROWS.to_dict(orient="records")},
    "inputs": {"inputs": ROWS.to_dict(orient="list")},
}


@pytest.mark.parametrize("form", sorted(PAYLOADS))
def test_invocations_answers_each_mlflow_format_as_mlflow_models_serve_does(
    served: TestClient, store: Store, form: str
) -> None:
    from mlflow.pyfunc import load_model, scoring_server

    payload = PAYLOADS[form]
    ours = served.post("/invocations", json=payload)
    assert ours.status_code == 200, ours.text
    assert [row["score"] for row in ours.json()["predictions"]] == pytest.approx(store.expected)
    with TestClient(scoring_server.init(load_model("models:/fraud@champion"))) as mlflows:
        theirs = mlflows.post("/invocations", json=payload)
    assert theirs.status_code == 200, theirs.text
    assert ours.json() == theirs.json()


def test_invocations_reads_csv_like_mlflow(served: TestClient, store: Store) -> None:
    answer = served.post("/invocations", content=ROWS.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert [row["score"] for row in answer.json()["predictions"]] == pytest.approx(store.expected)


def test_predict_takes_records_and_returns_scores(served: TestClient, store: Store) -> None:
    answer = served.post("/predict", json=ROWS.to_dict(orient="records"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["scores"] == pytest.approx(store.expected)
    wrapped = served.post("/predict", json={"records": ROWS.head(1).to_dict(orient="records")})
    assert wrapped.json()["scores"] == pytest.approx(store.expected[:1])


# --- the errors a client reads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/invocations", {"dataframe_records": [{"amount": 10.0}]}),
        ("/invocations", {"dataframe_split": {"columns": ["amount"], "data": [[10.0]]}}),
        ("/predict", [{"amount": 10.0}]),
    ],
)
def test_a_missing_column_is_a_400_naming_it(served: TestClient, path: str, payload: Any) -> None:
    answer = served.post(path, json=payload)
    assert answer.status_code == 400, answer.text
    assert "missing column 'velocity'" in answer.json()["message"]
    metrics = served.get("/metrics").text
    labels = {"model": "fraud", "version": "1", "endpoint": path, "status": "400"}
    assert metric(metrics, "mlgate_serve_errors_total", **labels) == 1.0


@pytest.mark.parametrize(
    ("body", "said"),
    [(b"{not json", "not valid JSON"), (b'{"rows": []}', "exactly one of the keys"), (b"[1, 2]", "JSON object")],
)
def test_a_malformed_body_is_a_400_that_says_what_is_wrong(served: TestClient, body: bytes, said: str) -> None:
    answer = served.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert said in answer.json()["message"]


def counted(client: TestClient, path: str, status: int, model: str = "fraud") -> tuple[float | None, float | None]:
    """(requests, errors) the server counted for `path` answered with `status`."""
    text = client.get("/metrics").text
    labels = {"model": model, "version": "1", "endpoint": path, "status": str(status)}
    return metric(text, "mlgate_serve_requests_total", **labels), metric(text, "mlgate_serve_errors_total", **labels)


@pytest.mark.parametrize("path", ["/invocations", "/predict"])
def test_a_body_nested_too_deep_is_a_400_and_counted(served: TestClient, path: str) -> None:
    # 200 kB, well under the body limit: Python's JSON parser runs out of recursion long before the end.
    body = b"[" * 100_000 + b"]" * 100_000
    answer = served.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith("the body nests arrays or objects too deeply to be read")
    assert counted(served, path, 400) == (1.0, 1.0)
    deep_inputs = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = served.post("/invocations", content=deep_inputs, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text


def test_a_body_past_the_limit_is_a_413_before_it_is_read_and_counted(store: Store) -> None:
    app = create_app(Settings("models:/fraud@champion", tracking_uri=store.tracking_uri, max_body_bytes=2048))
    rows = pd.concat([ROWS] * 30).to_dict(orient="records")  # about 3 kB of JSON
    with TestClient(app) as client:
        assert wait_ready(client)["ready"] is True
        sized = client.post("/invocations", json={"dataframe_records": rows})
        assert sized.status_code == 413, sized.text
        assert sized.json()["message"] == (
            f"the body is larger than this server's limit of 2048 bytes (serve.max_body_bytes): it is "
            f"{sized.request.headers['content-length']} bytes"
        )
        # Chunked, without a Content-Length: refused once the bytes read pass the limit.
        text = json.dumps({"dataframe_records": rows}).encode()
        pieces = iter([text[i : i + 512] for i in range(0, len(text), 512)])
        chunked = client.post("/invocations", content=pieces, headers={"Content-Type": "application/json"})
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413, chunked.text
        assert (
            chunked.json()["message"]
            == "the body is larger than this server's limit of 2048 bytes (serve.max_body_bytes)"
        )
        small = iter([json.dumps(PAYLOADS["dataframe_split"]).encode()])
        assert (
            client.post("/invocations", content=small, headers={"Content-Type": "application/json"}).status_code == 200
        )
        assert counted(client, "/invocations", 413) == (2.0, 2.0)


def test_the_content_length_alone_refuses_a_body_over_the_limit() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": [(b"content-length", b"2097152")]}
    with pytest.raises(PayloadError) as refused:
        asyncio.run(read_body(Request(scope, receive), DEFAULT_MAX_BODY_BYTES))
    assert refused.value.status == 413
    assert refused.value.message.endswith(f"limit of {1 << 20} bytes (serve.max_body_bytes): it is 2097152 bytes")


def test_the_server_s_body_limit_defaults_to_nginx_s_and_is_the_config_s() -> None:
    parser, _ = cli.build_parser()
    args = parser.parse_args(["serve", "--model", "models:/fraud@champion"])
    assert args.max_body_bytes == Settings("m").max_body_bytes == ServeConfig().max_body_bytes == 1 << 20
    assert parser.parse_args(["serve", "--model", "m", "--max-body-bytes", "4096"]).max_body_bytes == 4096


NAN_ROW = '{"dataframe_split": {"columns": ["amount", "velocity"], "data": [[12.5, 1.0], [NaN, 4.0]]}}'


@pytest.mark.parametrize(
    ("path", "body", "said"),
    [
        ("/invocations", NAN_ROW, "column 'amount': a missing value (null or NaN) at row 1, and the model's signature "
         "requires 'amount' (double) to have a value"),
        ("/invocations", '{"dataframe_records": [{"amount": 1, "velocity": 1}, {"amount": null, "velocity": 4}]}',
         "column 'amount': a missing value (null or NaN) at row 1"),
        ("/invocations", '{"dataframe_records": [{"amount": 1, "velocity": 1}, {"amount": "abc", "velocity": 4}]}',
         "column 'amount': 'abc' at row 1 is not a number (the model's signature declares double)"),
        ("/invocations", '{"instances": [{"amount": 1, "velocity": 1}, {"amount": "1e999", "velocity": 4}]}',
         "column 'amount': '1e999' at row 1 is beyond the range of double (it would be infinity)"),
        ("/invocations", '{"inputs": {"amount": [1, 1e999], "velocity": [1, 4]}}',
         "column 'amount': inf at row 1 is beyond the range of double"),
        ("/invocations", "amount,velocity\n12.5,1\nabc,4\n",
         "column 'amount': 'abc' at row 1 is not a number"),
        ("/predict", '[{"amount": 1, "velocity": 1}, {"amount": 2, "velocity": "fast"}, {"amount": 3, "velocity": 0}, '
         '{"amount": 4, "velocity": "x"}]',
         "column 'velocity': 'fast' at row 1 is not a number (the model's signature declares double) (2 rows like it)"),
    ],
)  # fmt: skip
def test_a_value_the_signature_refuses_is_a_400_naming_column_and_row(
    served: TestClient, path: str, body: str, said: str
) -> None:
    kind = "text/csv" if body.startswith("amount,") else "application/json"
    answer = served.post(path, content=body.encode(), headers={"Content-Type": kind})
    assert answer.status_code == 400, answer.text
    assert said in answer.json()["message"]
    assert counted(served, path, 400) == (1.0, 1.0)


def test_values_mlflow_reads_still_pass_and_a_model_without_signature_is_not_checked(
    served: TestClient, store: Store
) -> None:
    # Numeric strings are numbers to MLflow's conversion, and stay so: only those past the type's range are refused.
    spelled = [{"amount": str(row["amount"]), "velocity": row["velocity"]} for row in ROWS.to_dict(orient="records")]
    answer = served.post("/invocations", json={"dataframe_records": spelled})
    assert answer.status_code == 200, answer.text
    assert [row["score"] for row in answer.json()["predictions"]] == pytest.approx(store.expected)
    null_row = {"dataframe_records": [{"amount": None, "velocity": 4.0}]}
    assert served.post("/invocations", json=null_row).status_code == 400
    app = create_app(Settings("models:/unsigned/1", tracking_uri=store.tracking_uri))
    with TestClient(app) as client:
        assert wait_ready(client)["ready"] is True
        passed = client.post("/invocations", json=null_row)  # nothing to check it against: the model judges it
    assert passed.status_code == 200, passed.text


def test_a_fault_of_the_server_s_own_is_a_500_still_answered_and_counted(
    served: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(endpoint: str, output: Any) -> Any:
        raise RuntimeError("the encoder broke")

    monkeypatch.setattr("mlgate.serve.app._answer", broken)
    answer = served.post("/invocations", json=PAYLOADS["dataframe_split"])
    assert answer.status_code == 500
    assert answer.json() == {
        "error_code": "INTERNAL_ERROR",
        "message": "the server failed: RuntimeError: the encoder broke",
    }
    assert counted(served, "/invocations", 500) == (1.0, 1.0)


def test_a_client_gone_before_its_body_arrived_is_a_499_counted_as_the_client_s(store: Store) -> None:
    app = create_app(Settings("models:/fraud@champion", tracking_uri=store.tracking_uri))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/invocations", "raw_path": b"/invocations", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    with TestClient(app) as client:
        assert wait_ready(client)["ready"] is True
        asyncio.run(app(scope, receive, send))
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
        assert counted(client, "/invocations", 499) == (1.0, 1.0)


def schema(*columns: tuple[str, DataType, bool]) -> Schema:
    return Schema([ColSpec(kind, name, required=required) for name, kind, required in columns])


def refusal(table: pd.DataFrame, signature: Schema) -> str | None:
    try:
        check_values(table, signature)
    except PayloadError as exc:
        assert exc.status == 400
        return exc.message
    return None


def test_the_value_check_follows_each_signature_type() -> None:
    optional = schema(("amount", DataType.double, False))
    assert refusal(pd.DataFrame({"amount": [1.0, None, "NaN"]}, dtype=object), optional) is None  # optional: missing ok
    assert refusal(pd.DataFrame({"amount": ["1.5", "nan"]}), optional) is None
    required = schema(("amount", DataType.double, True))
    assert refusal(pd.DataFrame({"amount": [1.0, "NaN"]}, dtype=object), required) == (
        "column 'amount': a missing value ('NaN') at row 1, and the model's signature requires 'amount' (double) to "
        "have a value"
    )
    assert refusal(pd.DataFrame({"amount": [1, 10**400]}, dtype=object), required) == (
        "column 'amount': 1000000000000000000000000000000000000... at row 1 is beyond the range of double (it would "
        "be infinity)"
    )
    narrow = schema(("ratio", DataType.float, True))  # float32: 1e39 overflows it, not float64
    assert "1e+39 at row 0 is beyond the range of float" in str(refusal(pd.DataFrame({"ratio": [1e39]}), narrow))
    counts = schema(("count", DataType.long, True))
    assert "'zz' at row 0 is not a number (the model's signature declares long)" in str(
        refusal(pd.DataFrame({"count": ["zz"]}), counts)
    )
    # numpy's cast to int64 would wrap these to -9223372036854775808 without a word.
    assert refusal(pd.DataFrame({"count": [1.0, 1e20, np.inf]}), counts) == (
        "column 'count': 1e+20 at row 1 is beyond the range of long (at most 9223372036854775807) (2 rows like it)"
    )
    flags = schema(("flag", DataType.boolean, True), ("city", DataType.string, True))
    # MLflow's conversion would make the null False without a word: refused while it is still a null.
    assert refusal(pd.DataFrame({"flag": [True, None], "city": ["a", "b"]}), flags) == (
        "column 'flag': a missing value (null or NaN) at row 1, and the model's signature requires 'flag' (boolean) to "
        "have a value"
    )
    both = refusal(pd.DataFrame({"flag": [None, True], "city": [None, "b"]}), flags)
    assert (
        both is not None
        and "column 'flag'" in both
        and "; column 'city': a missing value (null or NaN) at row 0" in both
    )
    clean = pd.DataFrame({"amount": np.array([1.0, 2.0]), "extra": ["not", "declared"]})
    assert refusal(clean, required) is None


def test_the_model_raising_is_a_500_counted_in_the_error_metric(store: Store) -> None:
    app = create_app(Settings("models:/fragile/1", tracking_uri=store.tracking_uri))
    with TestClient(app) as client:
        assert wait_ready(client)["ready"] is True
        rows = pd.concat([ROWS] * 40).to_dict(orient="records")  # 120 rows: `fragile` raises above 100
        answer = client.post("/invocations", json={"dataframe_records": rows})
        assert answer.status_code == 500, answer.text
        assert "batches above 100 rows are not supported" in answer.json()["message"]
        assert client.post("/invocations", json={"dataframe_records": rows[:3]}).status_code == 200
        text = client.get("/metrics").text
    labels = {"model": "fragile", "version": "1", "endpoint": "/invocations"}
    assert metric(text, "mlgate_serve_errors_total", **labels, status="500") == 1.0
    assert metric(text, "mlgate_serve_requests_total", **labels, status="500") == 1.0
    assert metric(text, "mlgate_serve_requests_total", **labels, status="200") == 1.0
    assert metric(text, "mlgate_serve_errors_total", **labels, status="200") is None


# --- metrics and logs -------------------------------------------------------------------------------


def test_metrics_count_requests_latency_and_scores_by_model_and_version(served: TestClient, store: Store) -> None:
    for _ in range(2):
        assert served.post("/invocations", json=PAYLOADS["dataframe_split"]).status_code == 200
    assert served.post("/predict", json=ROWS.head(1).to_dict(orient="records")).status_code == 200
    text = served.get("/metrics").text
    model = {"model": "fraud", "version": "1"}
    assert metric(text, "mlgate_serve_requests_total", **model, endpoint="/invocations", status="200") == 2.0
    assert metric(text, "mlgate_serve_requests_total", **model, endpoint="/predict", status="200") == 1.0
    assert metric(text, "mlgate_serve_request_duration_seconds_count", **model, endpoint="/invocations") == 2.0
    # Every row's score is observed once: 3 + 3 + 1.
    assert metric(text, "mlgate_serve_score_count", **model) == 7.0
    assert metric(text, "mlgate_serve_score_sum", **model) == pytest.approx(2 * sum(store.expected) + store.expected[0])
    below_half = sum(score <= 0.5 for score in store.expected) * 2 + (store.expected[0] <= 0.5)
    assert metric(text, "mlgate_serve_score_bucket", **model, le="0.5") == below_half
    assert metric(text, "mlgate_serve_batch_rows_sum", **model) == 7.0  # one request at a time: one call each
    assert metric(text, "mlgate_serve_batch_rows_count", **model) == 3.0


def test_concurrent_requests_batched_past_what_the_model_takes_are_each_answered(store: Store) -> None:
    # `fragile` raises above 100 rows: 8 clients sending 15 rows at once (small requests: batched) make
    # shared calls of up to 120 rows it refuses, and each request is then predicted alone, so every client
    # still gets its own rows' scores.
    app = create_app(Settings("models:/fragile/1", tracking_uri=store.tracking_uri))
    rows = pd.concat([ROWS] * 5, ignore_index=True)
    expected = pytest.approx(store.expected * 5)
    with TestClient(app) as client:
        assert wait_ready(client)["ready"] is True

        def ask(_: int) -> tuple[int, Any]:
            answer = client.post("/invocations", json={"dataframe_split": rows.to_dict(orient="split")})
            return answer.status_code, answer.json()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(32)))
        text = client.get("/metrics").text
    assert all(status == 200 for status, _ in answers), [body for status, body in answers if status != 200][:2]
    assert all([row["score"] for row in body["predictions"]] == expected for _, body in answers)
    model = {"model": "fragile", "version": "1"}
    assert metric(text, "mlgate_serve_batch_rows_sum", **model) == 32 * 15.0  # the rows of the calls that answered
    assert metric(text, "mlgate_serve_errors_total", **model, endpoint="/invocations", status="500") is None


def test_without_batching_each_request_is_its_own_call(store: Store) -> None:
    app = create_app(Settings("models:/fraud@champion", tracking_uri=store.tracking_uri, batch_max_rows=0))
    with TestClient(app) as client:
        assert wait_ready(client)["ready"] is True
        with ThreadPoolExecutor(4) as pool:
            statuses = list(
                pool.map(lambda _: client.post("/invocations", json=PAYLOADS["dataframe_split"]).status_code, range(8))
            )
        text = client.get("/metrics").text
    assert statuses == [200] * 8
    assert metric(text, "mlgate_serve_batch_rows_count", model="fraud", version="1") is None  # no batcher at all


def test_the_request_id_is_echoed_and_logged_with_version_latency_and_scores(
    served: TestClient, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    given = served.post("/invocations", json=PAYLOADS["inputs"], headers={"X-Request-ID": "req-42"})
    made = served.post("/predict", json=ROWS.to_dict(orient="records"))
    assert given.headers["X-Request-ID"] == "req-42"
    generated = made.headers["X-Request-ID"]
    assert len(generated) == 32 and generated != "req-42"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    logged = {line["request_id"]: line for line in lines if line["event"] == "prediction"}
    assert set(logged) == {"req-42", generated}
    for line in logged.values():
        assert (line["model"], line["version"], line["status"]) == ("fraud", "1", 200)
        assert line["latency_ms"] > 0
        assert line["scores"] == pytest.approx(store.expected)


def test_recent_answers_are_kept_by_request_id_and_mirror_copies_marked(served: TestClient, store: Store) -> None:
    """What a shadow step pairs: the answers from a cursor on, each with its request id, status and scores."""
    start = served.get("/mlgate/predictions", params={"after": 2**62, "limit": 1}).json()["next"]
    served.post("/invocations", json=PAYLOADS["inputs"], headers={"X-Request-ID": "client-1"})
    served.post("/invocations", json=PAYLOADS["inputs"], headers={"X-Request-ID": "copy-1", "X-Mlgate-Mirror": "1"})
    served.post("/predict", json=[{"amount": 10.0}], headers={"X-Request-ID": "bad-1"})
    page = served.get("/mlgate/predictions", params={"after": start}).json()
    assert page["next"] == start + 3 and page["dropped"] == 0
    kept = {answer["id"]: answer for answer in page["predictions"]}
    assert (kept["client-1"]["mirror"], kept["copy-1"]["mirror"]) == (False, True)
    assert kept["client-1"]["scores"] == pytest.approx(store.expected)
    assert (kept["bad-1"]["status"], kept["bad-1"]["scores"]) == (400, None)
    assert served.get("/mlgate/predictions", params={"after": page["next"]}).json()["predictions"] == []


# --- readiness and the command -----------------------------------------------------------------------


def test_a_uri_that_does_not_resolve_keeps_the_server_unready_and_says_why(store: Store) -> None:
    app = create_app(Settings("models:/no-such-model@champion", tracking_uri=store.tracking_uri))
    with TestClient(app) as client:
        body = wait_ready(client)
        assert client.get("/ready").status_code == 503
        assert body["ready"] is False
        assert "cannot load model models:/no-such-model@champion" in body["reason"], body
        assert client.get("/health").status_code == 200  # alive, so an orchestrator sees "not ready", not "dead"
        refused = client.post("/invocations", json=PAYLOADS["inputs"])
        assert refused.status_code == 503
        assert "models:/no-such-model@champion" in refused.json()["message"]


def test_a_port_in_use_is_refused_naming_the_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["serve", "--model", "models:/fraud@champion", "--port", str(port)])
    out = capsys.readouterr()
    assert code == 3, out
    assert f"port {port} on 127.0.0.1 is in use" in out.out + out.err
    assert "hint: pass another --port" in out.err


def test_the_server_listens_on_loopback_only_by_default() -> None:
    parser, _ = cli.build_parser()
    args = parser.parse_args(["serve", "--model", "models:/fraud@champion"])
    assert args.host == DEFAULT_HOST == "127.0.0.1"
    assert (args.port, args.workers) == (8080, 1)


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mlgate_serve_becomes_ready_and_answers_as_the_model_predicts(store: Store, tmp_path: Path) -> None:
    port = free_port()
    mlgate = Path(sys.executable).parent / "mlgate"
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(
        [str(mlgate), "serve", "--model", "models:/fraud@champion", "--tracking-uri", store.tracking_uri,
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                status, body = _get(base + "/ready")
            except (urllib.error.URLError, ConnectionError):
                status, body = 0, {}
            if status == 200:
                break
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        assert (body["model"], body["version"], body["warm_up"]) == ("fraud", "1", "input example")
        request = urllib.request.Request(
            base + "/invocations",
            data=json.dumps(PAYLOADS["dataframe_split"]).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            predictions = json.loads(answer.read())["predictions"]
        assert [row["score"] for row in predictions] == pytest.approx(store.expected)
    finally:
        stop_group(server, grace_s=30)  # SIGTERM, then SIGKILL to the group after 30 s
    # SIGTERM is uvicorn's graceful shutdown: the application shuts down, then uvicorn re-raises the signal.
    text = (tmp_path / "serve.log").read_text()
    assert server.returncode in (0, -signal.SIGTERM), text
    assert "Application shutdown complete" in text, text
