"""MLflow tracking URIs and stores, for the gates that talk to MLflow (train, test-model).

The tracking URI usually comes from a secret. It is only ever shown redacted (no user info, no
query), and error text from the client is scrubbed of it before it is printed. A URI that MLflow
cannot open is an expected failure with a fix, never a traceback.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from mlgate.errors import InputError, MlgateError, ToolError

if TYPE_CHECKING:
    from mlflow import MlflowClient

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


def _secrets(uri: str) -> list[str]:
    parts = urlsplit(uri)
    found = [value for value in (parts.password, parts.username, parts.query) if value]
    found += [os.environ[k] for k in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD") if os.environ.get(k)]
    return found


def scrub(text: str, uri: str) -> str:
    """`text` with the URI and every credential in it (or in the environment) replaced."""
    text = text.replace(uri, redact(uri))
    for secret in _secrets(uri):
        text = text.replace(secret, "***")
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


def open_client(uri: str) -> MlflowClient:
    """A client of the tracking store and model registry at `uri`, or the expected failure that says why not.

    MLflow resolves the tracking store here (and creates or migrates a sqlite database), so a URI it
    cannot open fails in this call, before anything is installed or trained.
    """
    from mlflow import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as exc:
        raise _open_failure(exc, uri) from None
