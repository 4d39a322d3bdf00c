"""The one redaction layer under every channel mlgate writes to: a registry of secret values and `redact`.

Whatever mlgate prints, annotates, summarises, comments, sets as an output or writes to a log it
uploads passes through `redact` first (gha and procio call it; `mlgate.cli` also wraps stdout and
stderr), so no gate has to remember which of its strings might carry a credential.

Secrets are registered as soon as they are known: `register_environment()` when the CLI starts,
`register_uri()` for every URI mlgate is given (tracking URI, DVC remote URL), `register()` for any
other value (a secret passed to `mlgate ci`). Inside GitHub Actions each new value the runner does not
know yet (URI credentials, registered values; not the environment's secrets, which it masks already)
is also announced with `::add-mask::` at registration, before anything could print it, so the runner
masks it in output mlgate does not write itself (a child process writing straight to the job log).

Values shorter than MIN_LENGTH and bare words such as `true` are not registered: replacing them
everywhere would mangle ordinary text, and a credential that short protects nothing anyway.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TextIO, TypeVar, cast
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_LENGTH = 4
# Values an environment variable named like a secret often holds without being one (a feature flag).
_NOT_SECRETS = frozenset({"true", "false", "none", "null", "unset", "empty", "disabled", "enabled"})
# Environment variables whose values are secrets. MLFLOW_TRACKING_USERNAME is deliberately absent:
# a user name is no credential on its own and is often a common word ("mlflow", "admin", "ci"),
# which masking everywhere would garble; inside a URI the user-info pattern below removes it.
SECRET_ENV_NAMES = frozenset(
    {
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "ACTIONS_RUNTIME_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_CLIENT_SECRET",
    }
)
# Any other variable with one of these words as a whole `_`-separated part of its name (DVC's
# remote passwords and keys, a project's API token); whole parts, so TOKENIZERS_PARALLELISM is not one.
_SECRET_NAME_PARTS = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY", "CREDENTIALS"})
# Environment variables holding URIs whose user info is a credential.
URI_ENV_NAMES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLGATE_INPUT_TRACKING_URI",
    "MLGATE_INPUT_DVC_REMOTE_URL",
)
# `scheme://user:pass@` (or `scheme://token@`): the user info of any URI, registered or not.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s\"'<>`]+)@")

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _in_actions() -> bool:
    # Not gha.in_actions: gha imports this module.
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape_data(value: str) -> str:
    # The runner unescapes a workflow command's data, so a `%` in a secret is masked as itself.
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _announce(secret: str) -> None:
    """`::add-mask::` on stdout, past the redacting wrapper: redacted, the command would mask `***`."""
    stream: TextIO = sys.stdout
    if isinstance(stream, RedactingStream):
        stream.flush()
        stream = stream.wrapped
    stream.write(f"::add-mask::{_escape_data(secret)}\n")
    stream.flush()


def register(value: str | None, *, mask: bool = True) -> bool:
    """Treat `value` as a secret from now on; True when it was new and long enough to register.

    A multi-line value (a key file) is registered line by line as well: the runner masks single lines.
    `mask=False` registers without `::add-mask::`, for values the runner masks already (a step's
    secrets and its own tokens): announcing those would print them where the runner does not mask
    (act echoes its runtime token), and would put workflow commands on the stdout of every command.
    """
    global _pattern
    if not value:
        return False
    added = False
    for candidate in dict.fromkeys([value.strip(), *(line.strip() for line in value.splitlines())]):
        if len(candidate) < MIN_LENGTH or candidate.lower() in _NOT_SECRETS:
            continue
        with _lock:
            if candidate in _secrets:
                continue
            _secrets.add(candidate)
            _pattern = None
        added = True
        if mask and _in_actions():
            _announce(candidate)
    return added


def register_uri(uri: str | None) -> None:
    """Register the credentials of a URI: its password (as written and decoded), its user info and query."""
    if not uri:
        return
    try:
        parts = urlsplit(uri.strip())
        password = parts.password
    except ValueError:  # an invalid port or IPv6 host: still a string that may carry a password
        parts, password = None, None
    if parts is None:
        match = _USERINFO.search(uri)
        if match:
            register(match.group("userinfo"))
        return
    userinfo = parts.netloc.rpartition("@")[0]
    if password:
        register(password)
        register(unquote(password))
        register(userinfo)
    elif userinfo and len(userinfo) >= 16:
        # `https://<token>@host`: a user name that long is a token, not a person.
        register(userinfo)
        register(unquote(userinfo))
    if parts.query:
        # The whole query, not each value: `?verbose=true` must not make "true" a secret.
        register(parts.query)


def is_secret_env_name(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_ENV_NAMES or any(part in _SECRET_NAME_PARTS for part in upper.split("_"))


def register_environment(environ: Mapping[str, str] | None = None) -> None:
    """Register the secrets in the environment: the variables named like secrets and the URIs' credentials."""
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if is_secret_env_name(name):
            # Variables named like secrets reach a step from `secrets.*` or the runner itself, which
            # masks them already: redacted in mlgate's output, not announced again.
            register(value, mask=False)
    for name in URI_ENV_NAMES:
        register_uri(env.get(name))


def secrets() -> frozenset[str]:
    """The registered values (for tests and for code that must hand them on, never to print)."""
    with _lock:
        return frozenset(_secrets)


def clear() -> None:
    """Forget every registered value (tests start from an empty registry)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def _compiled() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _secrets:
            # Longest first, so a password inside a registered user info does not leave the user name behind.
            ordered = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(value) for value in ordered))
        return _pattern


def redact(text: str) -> str:
    """`text` with every registered secret and the user info of every URI replaced by `***`."""
    if not text:
        return text
    pattern = _compiled()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return text


T = TypeVar("T")


def redact_value(value: T) -> T:
    """`value` with every string in it redacted (dict keys and values, list and tuple items)."""
    if isinstance(value, str):
        return cast(T, redact(value))
    if isinstance(value, Mapping):
        return cast(T, {redact_value(key): redact_value(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return cast(T, type(value)(redact_value(item) for item in value))
    return value


class RedactingStream:
    """A text stream that redacts what is written to it before passing it on, a whole line at a time.

    Text is held back until a newline (or flush) so a secret written in pieces (`print(a, b)`) is
    still seen whole. Everything else (fileno, isatty, encoding, buffer) is the wrapped stream's:
    bytes written to `.buffer` bypass redaction, which no mlgate code does.
    """

    def __init__(self, wrapped: TextIO) -> None:
        self.wrapped = wrapped
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self.wrapped.write(redact(complete + "\n"))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            self.wrapped.write(redact(self._pending))
            self._pending = ""
        self.wrapped.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.wrapped, name)


def wrap(stream: TextIO) -> TextIO:
    """`stream` behind a RedactingStream (unchanged when it already is one)."""
    if isinstance(stream, RedactingStream):
        return cast(TextIO, stream)
    return cast(TextIO, RedactingStream(stream))


__all__ = [
    "MASK",
    "MIN_LENGTH",
    "RedactingStream",
    "clear",
    "is_secret_env_name",
    "redact",
    "redact_value",
    "register",
    "register_environment",
    "register_uri",
    "secrets",
    "wrap",
]
