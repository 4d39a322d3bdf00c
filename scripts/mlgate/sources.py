"""Read the data sources of mlgate.yaml into pandas frames (pandas only: it also runs in the project venv)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlgate.config import DataSource, LoadedConfig
from mlgate.errors import InputError
from mlgate.paths import kind_problem, outside_root

_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
# Delimiters we recognise in a header that parsed into a single column.
_LIKELY_DELIMITERS = {";": ";", "\t": "\\t", "|": "|", ",": ","}


@dataclass(frozen=True)
class LoadedSource:
    """One source read into memory, with where it came from."""

    name: str
    path: Path
    format: str
    frame: pd.DataFrame

    @property
    def rows(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class _Where:
    """The config line an error about a source points at."""

    file: str
    line: int | None


def source_format(source: DataSource, path: Path) -> str:
    """`csv` or `parquet`: the configured format, else the file's extension."""
    if source.format:
        return source.format
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    raise InputError(
        f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}",
        hint="set data.sources.<name>.format to csv or parquet",
    )


def load_source(config: LoadedConfig, name: str, *, datetime_columns: list[str] | None = None) -> LoadedSource:
    """Read source `name`; `datetime_columns` are parsed from text when the file is CSV."""
    sources = config.model.data.sources
    if name not in sources:
        raise InputError(
            f"unknown data source {name!r} (declared: {', '.join(sorted(sources)) or 'none'})",
            hint="name a source declared under data.sources",
            file=str(config.path),
            line=config.line_of("data", "sources"),
        )
    source = sources[name]
    path = config.root / source.path
    where = _Where(str(config.path), config.line_of("data", "sources", name, "path"))
    problem = kind_problem(path)
    if problem is not None and problem.endswith("does not exist"):  # a DVC symlink not pulled yet included
        raise InputError(
            f"data source {name!r}: file {path} {problem}",
            hint=(
                f"check data.sources.{name}.path (relative to {config.root}); "
                "if the data is versioned with DVC, set data.dvc: true or run `dvc pull`"
            ),
            file=where.file,
            line=where.line,
        )
    if problem is not None:
        # A FIFO would block the read and a device (/dev/zero) never end: refused before pandas opens it.
        raise InputError(
            f"data source {name!r}: {path} {problem}",
            hint=f"point data.sources.{name}.path at a CSV or Parquet file",
            file=where.file,
            line=where.line,
        )
    real = None if source.allow_outside_project else outside_root(config.root, path)
    if real is not None:
        raise InputError(
            f"data source {name!r}: {path} resolves through a symlink to {real}, outside the project "
            f"{config.root}; it was not read",
            hint=f"copy the file into the project, or set data.sources.{name}.allow_outside_project: true "
            "to read it from there on purpose",
            file=where.file,
            line=where.line,
        )
    if path.stat().st_size == 0:
        raise InputError(
            f"data source {name!r}: file {path} is empty (0 bytes)",
            hint="regenerate or re-download the file; an empty file usually means a failed export",
            file=where.file,
            line=where.line,
        )
    fmt = source_format(source, path)
    frame = _read_parquet(name, path, where) if fmt == "parquet" else _read_csv(name, path, source, where)
    if len(frame) == 0:
        raise InputError(
            f"data source {name!r}: file {path} has no rows" + (" (a header only)" if fmt == "csv" else ""),
            hint="the file holds column names but no data; regenerate it",
            file=where.file,
            line=where.line,
        )
    if fmt == "csv":
        for column in datetime_columns or []:
            if column in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame[column]):
                try:
                    frame[column] = pd.to_datetime(frame[column], format="ISO8601")
                except (ValueError, TypeError):
                    # Left as text: the type expectation then reports the column as not datetime.
                    pass
    return LoadedSource(name=name, path=path, format=fmt, frame=frame)


def _read_parquet(name: str, path: Path, where: _Where) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise InputError(
            f"data source {name!r}: file {path} is not a readable Parquet file: {exc}",
            hint="re-export the file as Parquet, or set data.sources.<name>.format: csv if it is text",
            file=where.file,
            line=where.line,
        ) from None


def _read_csv(name: str, path: Path, source: DataSource, where: _Where) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep=source.delimiter, low_memory=False)
    except pd.errors.EmptyDataError:
        raise InputError(
            f"data source {name!r}: file {path} holds no data (no header, no rows)",
            hint="regenerate the file; it is blank",
            file=where.file,
            line=where.line,
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(
            f"data source {name!r}: file {path} cannot be parsed as CSV "
            f"with delimiter {source.delimiter!r}: {str(exc).strip()}",
            hint=f"check the file, or set data.sources.{name}.delimiter / format",
            file=where.file,
            line=where.line,
        ) from None
    if frame.shape[1] == 1:
        header = str(frame.columns[0])
        for delimiter, shown in _LIKELY_DELIMITERS.items():
            if delimiter != source.delimiter and delimiter in header:
                raise InputError(
                    f"data source {name!r}: file {path} parsed into one column {header[:60]!r}; "
                    f"it looks {shown}-delimited, not {source.delimiter!r}-delimited",
                    hint=f"set data.sources.{name}.delimiter: {shown!r} in mlgate.yaml",
                    file=where.file,
                    line=where.line,
                )
    return frame
