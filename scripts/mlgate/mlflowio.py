"""MLflow tracking URIs and stores, for the gates that talk to MLflow (train, test-model, compress, registry).

The gates' retried MLflow calls (train, compress, registry) go through one MlflowHandle (connect): a
client and `call`, each call bounded and retried, its last failure a ToolError naming the server.

The tracking URI usually comes from a secret. It is only ever shown redacted (no user info, no
query), and error text from the client is scrubbed of it before it is printed; its credentials
join mlgate.redaction's registry, which every output channel redacts. A URI that MLflow cannot
open is an expected failure with a fix, never a traceback.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

from mlgate import redaction
from mlgate.errors import InputError, MlgateError, ToolError

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")
N = TypeVar("N", int, float)

# MLflow's SQL stores (mlflow.store.db.db_types.DATABASE_ENGINES): registered only where sqlalchemy is installed.
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
URI_HINT = (
    "pass a tracking server's URL (http://host:5000 or https://...) or a local store (sqlite:///mlflow.db) "
    "as the tracking-uri input, --tracking-uri or MLFLOW_TRACKING_URI"
)


def redact(uri: str) -> str:
    """The URI without credentials or query: safe to print."""
    parts = urlsplit(uri)
    if not parts.netloc:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username or parts.password:
        host = f"***@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str, uri: str) -> str:
    """`text` with the URI shown redacted and every registered credential (the URI's, the environment's) replaced."""
    # Registered here too, for callers that did not come through the CLI (which registers both at start).
    redaction.register_uri(uri)
    redaction.register_environment()
    text = redaction.redact(text.replace(uri, redact(uri)))
    # Text about this URI (the client's errors) also loses its short parts, which the registry ignores
    # everywhere else so as not to garble ordinary text: a two-letter password still never shows here.
    # Not the user name: it is no credential (mlgate.redaction), and a short one ("u") would garble the
    # message ("req***est"); inside a URI it is masked with the rest of the user info anyway.
    parts = urlsplit(uri)
    for part in (parts.password, parts.query):
        if part:
            text = text.replace(part, redaction.MASK)
    return text


def _first_line(exc: BaseException, uri: str) -> str:
    lines = scrub(str(exc), uri).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def store_error(exc: Exception, uri: str, *, sql_hint: str | None = None) -> Exception | None:
    """What MLflow saying it has no store for `uri` means for a user; None for any other exception.

    Any MLflow call may say so (creating a client, loading a `models:/` URI, reading the registry).
    A scheme MLflow knows but this install cannot open (sqlite without sqlalchemy, as mlflow-skinny
    installs) comes back as ModuleNotFoundError, so that the CLI names the gate's extra; with
    `sql_hint` (where the fix is not an extra of mlgate) it is a ToolError with that hint.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    unsupported = isinstance(exc, UnsupportedModelRegistryStoreURIException) or (
        isinstance(exc, MlflowException) and exc.error_code == "FEATURE_DISABLED"
    )
    if not unsupported:
        return None
    shown = redact(uri)
    scheme = urlsplit(uri).scheme.split("+", 1)[0]
    if scheme in SQL_SCHEMES:
        message = f"the tracking URI {shown} needs MLflow's SQL store (sqlalchemy and alembic), which is not installed"
        if sql_hint is not None:
            return ToolError(message, hint=sql_hint)
        return ModuleNotFoundError(message, name="sqlalchemy")
    supported = [s for s in getattr(exc, "supported_uri_schemes", []) if s]
    known = f" (it knows {', '.join(supported)})" if supported else ""
    return InputError(
        f"MLflow has no store for the tracking URI {shown}: the scheme {scheme!r} is not one of its stores{known}",
        hint=URI_HINT,
    )


def _open_failure(exc: Exception, uri: str) -> Exception:
    """The expected failure for an exception raised while MLflow opened the store at `uri`."""
    from mlflow.exceptions import MlflowException

    shown = redact(uri)
    problem = store_error(exc, uri)
    if problem is not None:
        return problem
    if isinstance(exc, ModuleNotFoundError):
        # A database driver (MySQLdb, psycopg, pymssql), not one of mlgate's dependencies.
        return ToolError(
            f"MLflow's store for {shown} needs the Python module {exc.name!r}, which is not installed",
            hint="install the database driver in the same venv (e.g. pymysql with mysql+pymysql://, psycopg2-binary "
            "for postgresql://), or use the tracking server's http(s) URL",
        )
    if isinstance(exc, MlflowException):
        # MLflow rejects the URI itself (e.g. the file store's './mlruns', in maintenance mode) or its store.
        cls: type[MlgateError] = InputError if exc.error_code == "INVALID_PARAMETER_VALUE" else ToolError
        return cls(f"MLflow cannot use the tracking URI {shown}: {_first_line(exc, uri)}", hint=URI_HINT)
    # sqlalchemy's errors for a file that is not a database, an unwritable path, a locked database.
    return ToolError(
        f"cannot open the MLflow store at {shown}: {type(exc).__name__}: {_first_line(exc, uri)}",
        hint="a sqlite:/// URI must name an MLflow database file in a writable folder; " + URI_HINT,
    )


def _loader_module(model_dir: Path | None, uri: str) -> str | None:
    """`flavors.python_function.loader_module` of the model's MLmodel file (in `model_dir`, else read from `uri`),
    None where it names none or cannot be read."""
    try:
        if model_dir is not None:
            import yaml

            data = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
        else:
            from mlflow.models import Model

            data = {"flavors": Model.load(uri).flavors}
        loader = data["flavors"]["python_function"]["loader_module"]
    except Exception:  # the explanation of a failure already raised: without the file, a plainer one
        return None
    return loader if isinstance(loader, str) else None


def loader_failure(exc: ImportError, model_dir: Path | None, uri: str) -> MlgateError:
    """What an ImportError from `mlflow.pyfunc.load_model` of the model at `uri` (downloaded into `model_dir`)
    means: the loader module its MLmodel names does not exist (bad input: the model was logged wrong or edited),
    or the loader needs a library the environment running the model lacks (a tool not installed)."""
    loader = _loader_module(model_dir, uri)
    missing = exc.name or ""
    if loader and missing and (loader == missing or loader.startswith(missing + ".")):
        return InputError(
            f"{uri}: its MLmodel file names flavors.python_function.loader_module {loader!r}, a module that "
            f"does not exist (no module named {missing!r})",
            hint="log the model again with a flavor's log_model (e.g. mlflow.sklearn.log_model, or "
            "mlflow.pyfunc.log_model with a python_model), which writes the loader_module MLflow provides; "
            "a loader of the project's own goes in the model's code_paths",
        )
    return ToolError(
        f"{uri}: loading the model needs the Python module {missing or str(exc)!r}, which is not installed "
        "where the model runs",
        hint="add the library the model was logged with to environment.install (the project venv runs the model)",
    )


def open_client(uri: str) -> MlflowClient:
    """A client of the tracking store and model registry at `uri`, or the expected failure that says why not.

    MLflow resolves the tracking store here (and creates or migrates a sqlite database), so a URI it
    cannot open fails in this call, before anything is installed or trained.
    """
    from mlflow import MlflowClient

    redaction.register_uri(uri)
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as exc:
        raise _open_failure(exc, uri) from None


# MLflow retries each HTTP request itself (7 times with backoff, 120 s timeout: about four minutes
# against a server that is down). mlgate's own requests fail fast and with_retries does the retrying,
# with a bound a user can read; the processes mlgate starts (training, model tests) keep a few retries
# of their own, for a blip during an hour of training, but never MLflow's minutes. A value the user set wins.
HTTP_ENV_OWN = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
HTTP_ENV_CHILD = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_S = 1.0
_set_by_mlgate: dict[str, str] = {}  # what bound_requests put into os.environ, told apart from the user's


def bound_requests() -> None:
    """Make this process's MLflow HTTP requests fail fast (a value the user set is kept)."""
    for key, value in HTTP_ENV_OWN.items():
        if key not in os.environ:
            os.environ[key] = value
            _set_by_mlgate[key] = value


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env`, for a process mlgate starts, with MLflow's HTTP retries and timeout bounded unless the user set them,
    and MLflow's telemetry off unless the user set that."""
    for key, value in HTTP_ENV_CHILD.items():
        given = os.environ.get(key)
        env[key] = given if given is not None and given != _set_by_mlgate.get(key) else value
    no_telemetry(env)
    return env


# MLflow 3 sends usage telemetry and writes an installation id to ~/.config/mlflow/telemetry.json on
# import, unless MLFLOW_DISABLE_TELEMETRY (or DO_NOT_TRACK) is true or it detects CI. A gate runs on
# laptops too (`mlgate ci`, a gate run by hand), where it must not report home nor write outside the
# project: mlgate turns it off for itself and for the processes it starts. A value the user set wins.
# onnxruntime (the compress gate's variants, a served ONNX model) does the same through its 1DS telemetry: its
# first session writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db} (under
# XDG_CACHE_HOME when set) and sends trace events, unless ORT_DISABLE_TELEMETRY=1 when it initialises.
TELEMETRY_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1"}


def no_telemetry(env: MutableMapping[str, str] | None = None) -> None:
    """Turn MLflow's and onnxruntime's telemetry off in `env` (default: this process's environment, before either is
    imported)."""
    target = os.environ if env is None else env
    for key, value in TELEMETRY_ENV.items():
        target.setdefault(key, os.environ.get(key, value))


def with_retries(
    what: str,
    uri: str,
    call: Callable[[], T],
    *,
    attempts: int | None = None,
    backoff_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, retried with exponential backoff (MLGATE_MLFLOW_ATTEMPTS, MLGATE_MLFLOW_BACKOFF_S);
    then a ToolError naming the (redacted) server."""
    attempts = attempts or _env_number("MLGATE_MLFLOW_ATTEMPTS", DEFAULT_ATTEMPTS, int)
    delay = backoff_s if backoff_s is not None else _env_number("MLGATE_MLFLOW_BACKOFF_S", DEFAULT_BACKOFF_S, float)
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            last = (scrub(f"{type(exc).__name__}: {exc}", uri).strip().splitlines() or [""])[0][:300]
            if attempt < attempts:
                print(f"mlgate: {what} failed (attempt {attempt}/{attempts}), retrying in {delay:g}s: {last}")
                sleep(delay)
                delay *= 2
    raise ToolError(
        f"MLflow tracking server {redact(uri)}: {what} failed after {attempts} attempts: {last}",
        hint=(
            "check the tracking-uri input (secret or variable) and that the server is up and reachable from the "
            "runner; credentials go in MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN"
        ),
    )


def _env_number(name: str, default: N, kind: Callable[[str], N]) -> N:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = default
    else:
        if value > 0:
            return value
    raise InputError(
        f"{name}={raw!r} is not a positive number",
        hint=f"set {name} to a number above 0 (default {default:g}), or unset it",
    )


class MlflowHandle:
    """One MLflow tracking server (or store) for mlgate's own calls: its client, and `call`, which bounds and
    retries each call (with_retries) and turns the last failure into a ToolError naming the server, its
    credentials redacted."""

    def __init__(self, client: MlflowClient, uri: str) -> None:
        self.client = client
        self.uri = uri

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()` (one or a few requests of `client`), retried; `what` names it in the messages a user reads."""
        return with_retries(what, self.uri, fn)

    def scrub(self, text: str) -> str:
        """`text` (the client's error text) safe to print: the URI redacted, every credential replaced."""
        return scrub(text, self.uri)

    def reached(self) -> MlflowHandle:
        """This handle, once the server has answered: one that is down fails here, within with_retries' bound."""
        self.call("reaching the server", lambda: self.client.search_experiments(max_results=1))
        return self


def connect(uri: str) -> MlflowHandle:
    """A handle on the MLflow store at `uri` (open_client's failures if MLflow cannot open it), its requests
    failing fast (bound_requests) so that MlflowHandle.call does the retrying. Nothing is requested yet."""
    bound_requests()
    return MlflowHandle(open_client(uri), uri)


def reach(uri: str) -> MlflowClient:
    """A client of `uri` whose server has answered once: one that is down fails here within with_retries'
    bound, before anything is installed, trained or loaded."""
    return connect(uri).reached().client
