"""The FastAPI application of `mlgate serve`: one model, loaded once, answering predictions, health and metrics.

The model loads in a thread started by the lifespan, so /health answers at once and /ready says
what is happening (loading, the reason it failed, or ready after a warm-up prediction) instead of
the port staying closed for as long as a large model downloads. Predictions run in Starlette's
threadpool: parsing, predict and serialising never block the event loop.

Every prediction request is answered and counted, whatever fails: a body past `max_body_bytes` is a 413
before it is read whole, a body the server cannot read (not JSON, nested too deep, a value the model's
signature refuses) a 4xx naming the problem, the model raising a 500, and anything else that breaks a 500
too, all in the request metric by status, so the canary analysis tells the requests' faults (4xx) from the
model's and the server's (5xx).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from mlgate.errors import MlgateError
from mlgate.serve.batching import DEFAULT_MAX_ROWS, Batcher
from mlgate.serve.metrics import Metrics
from mlgate.serve.model import ServedModel, download_folder, load, warm_up_input
from mlgate.serve.payload import (
    DEFAULT_MAX_BODY_BYTES,
    ModelError,
    PayloadError,
    check_columns,
    jsonable,
    parse_invocations,
    parse_predict,
    predict,
    scores,
)
from mlgate.serve.recent import PAGE, RecentPredictions

SETTINGS_ENV = "MLGATE_SERVE_SETTINGS"
REQUEST_ID = "X-Request-ID"
MIRROR_HEADER = "x-mlgate-mirror"  # on the copies nginx mirrors to the canary in a shadow step
# nginx's status for a client that closed the connection before its request was answered: the client's doing.
CLIENT_CLOSED = 499


@dataclass(frozen=True)
class Settings:
    """What one server serves: the model's URI, where it resolves, and the name its metrics carry."""

    model_uri: str
    tracking_uri: str | None = None
    name: str | None = None
    # Rows one model call may gather from concurrent requests (mlgate.serve.batching); 0: each request alone.
    batch_max_rows: int = DEFAULT_MAX_ROWS
    # A larger request body is answered 413 before it is read whole.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Settings:
        return cls(**json.loads(os.environ[SETTINGS_ENV]))


class State:
    """The server's model, or why there is none yet; written once by the loading thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: ServedModel | None = None
        self.batcher: Batcher | None = None
        self.reason = f"loading {settings.model_uri}"
        self.warm_up = ""
        self.done = threading.Event()
        self.recent = RecentPredictions()
        # The folder the model was downloaded into (mlgate's own), removed when the server stops or the load fails.
        self.download: str | None = None
        self.stopped = False

    def remove_download(self) -> None:
        folder, self.download = self.download, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def label(self) -> tuple[str, str]:
        if self.model is not None:
            return self.model.identity.name, self.model.identity.version
        return self.settings.name or self.settings.model_uri, ""


def log(event: str, **fields: Any) -> None:
    """One JSON line on stdout (mlgate's redacting stream under the CLI)."""
    line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str)
    print(line, file=sys.stdout, flush=True)


def load_and_warm(state: State, batch_rows: Callable[[str, str, int], None]) -> None:
    settings = state.settings
    try:
        if settings.tracking_uri:
            import mlflow

            from mlgate.mlflowio import bound_requests

            bound_requests()  # a server that is down fails the load in seconds, not MLflow's minutes of retries
            mlflow.set_tracking_uri(settings.tracking_uri)
            mlflow.set_registry_uri(settings.tracking_uri)
        state.download = download_folder(settings.model_uri)
        model = load(settings.model_uri, settings.name, state.download)
        example = warm_up_input(model)
        if example is not None:
            try:
                model.predict(example)
            except Exception as exc:
                raise MlgateError(
                    f"the warm-up prediction of {settings.model_uri} on its input example failed: "
                    f"{type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
        state.warm_up = "input example" if model.pyfunc.input_example is not None else "signature row"
        if example is None:
            state.warm_up = "none (the model has neither an input example nor a column signature)"
        if settings.batch_max_rows > 0:
            name, version = model.identity.name, model.identity.version
            state.batcher = Batcher(
                model, settings.batch_max_rows, observe=lambda rows: batch_rows(name, version, rows)
            )
        state.model = model
        state.reason = ""
        log("ready", model=model.identity.name, version=model.identity.version, uri=model.uri, warm_up=state.warm_up)
    except MlgateError as exc:
        state.reason = exc.message
        log("not_ready", uri=settings.model_uri, reason=exc.message, hint=exc.hint)
        print(f"mlgate serve: the model did not load, /ready answers 503: {exc.message}", file=sys.stderr, flush=True)
    except Exception as exc:  # a bug or an unexpected failure still says why the server is not ready
        state.reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        log("not_ready", uri=settings.model_uri, reason=state.reason)
    finally:
        # No model, no use for its files; and a load that outlived the server's shutdown cleans up after itself.
        if state.model is None or state.stopped:
            state.remove_download()
        state.done.set()


def _error(status: int, message: str, request_id: str) -> JSONResponse:
    # The shape of `mlflow models serve`'s errors, so its clients read them the same way.
    code = "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR"
    if status == 503:
        code = "TEMPORARILY_UNAVAILABLE"
    return JSONResponse({"error_code": code, "message": message}, status, headers={REQUEST_ID: request_id})


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, or a 413 PayloadError once it is known to exceed `limit` bytes: from its
    Content-Length before a byte is read, else (a chunked body) as soon as the bytes read pass the limit."""
    refused = f"the body is larger than this server's limit of {limit} bytes (serve.max_body_bytes)"
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise PayloadError(f"the Content-Length header {declared[:40]!r} is not a number of bytes") from None
        if size > limit:
            raise PayloadError(f"{refused}: it is {size} bytes", 413)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadError(refused, 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings, metrics: Metrics | None = None) -> FastAPI:
    state = State(settings)
    meter = metrics if metrics is not None else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A daemon thread: a load still hanging on a dead server does not hold up shutdown.
        loading = threading.Thread(
            target=load_and_warm, args=(state, meter.observe_batch), name="mlgate-serve-load", daemon=True
        )
        loading.start()
        try:
            yield
        finally:
            state.stopped = True
            state.remove_download()

    app = FastAPI(title="mlgate serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    async def answer(request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
        model = state.model
        name, version = state.label()
        scored: list[float] | None = None
        if model is None:
            response: Response = _error(503, f"not ready: {state.reason}", request_id)
        else:
            content_type = request.headers.get("content-type", "application/json")
            try:
                body = await read_body(request, settings.max_body_bytes)
                if endpoint == "/invocations":
                    data, params = await run_in_threadpool(parse_invocations, body, content_type, model)
                else:
                    data, params = await run_in_threadpool(parse_predict, body, model), None
                batcher = state.batcher
                if batcher is not None and Batcher.accepts(data, params):
                    check_columns(data, model)
                    output = await batcher.predict(data)
                else:
                    output = await run_in_threadpool(predict, model, data, params)
                content, scored = await run_in_threadpool(_answer, endpoint, output)
                response = Response(content, 200, media_type="application/json", headers={REQUEST_ID: request_id})
            except PayloadError as exc:
                response = _error(exc.status, exc.message, request_id)
            except ModelError as exc:
                response = _error(500, f"the model failed to predict: {exc}", request_id)
            except ClientDisconnect:
                response = _error(CLIENT_CLOSED, "the client closed the connection before its body arrived", request_id)
            except Exception as exc:  # a fault of the server's own: still answered, and counted against it (5xx)
                response = _error(500, f"the server failed: {type(exc).__name__}: {str(exc)[:300]}", request_id)
        seconds = time.perf_counter() - started
        meter.observe(name, version, endpoint, response.status_code, seconds, scored)
        fields: dict[str, Any] = {"request_id": request_id, "model": name, "version": version, "endpoint": endpoint}
        fields |= {"status": response.status_code, "latency_ms": round(seconds * 1000.0, 3)}
        if scored is not None:
            fields["scores"] = scored
        if response.status_code >= 400:
            fields["error"] = json.loads(bytes(response.body))["message"]
        mirrored = request.headers.get(MIRROR_HEADER) == "1"
        state.recent.add(request_id, mirrored, response.status_code, scored)
        if mirrored:
            fields["mirror"] = True
        log("prediction", **fields)
        return response

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return await answer(request, "/invocations")

    @app.post("/predict")
    async def predict_records(request: Request) -> Response:
        return await answer(request, "/predict")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        model = state.model
        if model is None:
            return JSONResponse({"ready": False, "uri": settings.model_uri, "reason": state.reason}, 503)
        identity = model.identity
        found = {"model": identity.name, "version": identity.version, "uri": model.uri, "warm_up": state.warm_up}
        return JSONResponse({"ready": True, **found})

    @app.get("/mlgate/predictions")
    async def recent_predictions(after: int = 0, limit: int = PAGE) -> JSONResponse:
        """The recent answers by request id, from the cursor `after` (a shadow step pairs the two servers')."""
        return JSONResponse(state.recent.since(after, min(max(1, limit), PAGE)))

    @app.get("/metrics")
    async def metrics_text() -> Response:
        content, media_type = meter.exposition()
        return Response(content, media_type=media_type)

    return app


def _dump(payload: Any) -> bytes:
    from mlflow.utils.proto_json_utils import NumpyEncoder

    return json.dumps(payload, cls=NumpyEncoder).encode()


def _answer(endpoint: str, output: Any) -> tuple[bytes, list[float] | None]:
    """The body of a prediction's answer and its scores: MLflow's `{"predictions": ...}` for /invocations,
    `{"scores": [...]}` for /predict (a 422 when the output has no single score per row)."""
    scored = scores(output)
    if endpoint == "/invocations":
        return _dump({"predictions": jsonable(output)}), scored
    if scored is None:
        raise PayloadError(
            "the model's output has no single score per row (one column, a column named 'score', or two classes); "
            "POST the rows to /invocations for its whole output",
            422,
        )
    return _dump({"scores": scored}), scored


def app_from_env() -> FastAPI:
    """The uvicorn factory (`mlgate.serve.app:app_from_env`): each worker builds its app from the settings.

    A worker process of `--workers N` starts outside `mlgate.cli.main`, so it puts its own output
    behind the redaction layer here."""
    from mlgate import redaction

    settings = Settings.from_env()
    if not isinstance(sys.stdout, redaction.RedactingStream):
        redaction.register_environment()
        redaction.register_uri(settings.tracking_uri)
        sys.stdout, sys.stderr = redaction.wrap(sys.stdout), redaction.wrap(sys.stderr)
    return create_app(settings)
