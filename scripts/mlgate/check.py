"""`mlgate check`'s core: mlgate.yaml and everything it names, checked in about a second.

Nothing is trained or validated and no data is loaded: files are checked for existence, CSV headers
are read with the csv module and Parquet schemas with pyarrow (only when a source is Parquet), so the
command runs in mlgate's base install, without pandas, Great Expectations or MLflow.
"""

from __future__ import annotations

import csv
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from mlgate.config import (
    DataSource,
    LoadedConfig,
    MlgateConfig,
    _format_location,
    _hint_for,
    _key_lines,
    load_config,
    read_config_document,
)
from mlgate.errors import ConfigError
from mlgate.paths import (
    FileRefused,
    kind_problem,
    outside_root,
    pip_files,
    pip_local_paths,
    read_text,
    workflow_files,
)
from mlgate.yamlio import YamlRefused, parse_yaml

Kind = Literal["config", "input"]

# The suffixes sources.source_format reads (that module imports pandas, which this one must not).
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
_LIKELY_DELIMITERS = {";": ";", "\t": "\\t", "|": "|", ",": ","}
_SHOWN_COLUMNS = 15
_INTERPRETERS = re.compile(r"^(python[0-9.]*|bash|sh|Rscript)$")
# mlgate's reusable workflows and the profile input each passes to the train action, with its default.
_WORKFLOW_PROFILE = {"ml-ci": ("train-profile", "quick"), "ml-train": ("profile", "full")}
_REUSABLE = re.compile(r"(?:^|/)\.github/workflows/(ml-ci|ml-train)\.ya?ml(?:@|$)")
_TRAIN_ACTION = re.compile(r"mlgate.*/actions/train(?:@|$)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong, at the file and line to fix.

    `kind` decides the exit code: `config` when mlgate.yaml (or a workflow's use of it) is wrong,
    `input` when a file or column it names is missing.
    """

    level: Literal["error", "warning"]
    kind: Kind
    message: str
    file: str
    line: int | None = None


@dataclass
class CheckReport:
    config: Path
    problems: list[Problem] = field(default_factory=list)
    sources: int = 0
    columns: int = 0
    files: int = 0
    profiles: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]


def check_config(path: str | Path) -> CheckReport:
    """Every problem of the config at `path` and of the files, columns and profiles it names.

    Raises ConfigError only when there is no file to check.
    """
    config_path = Path(path)
    report = CheckReport(config=config_path)
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        if not config_path.is_file():
            raise
        report.problems = _schema_problems(config_path) or [
            Problem("error", "config", _as_problem(exc, config_path), str(config_path), exc.line)
        ]
    else:
        _Checker(loaded, report).run()
    report.problems.sort(key=lambda p: (p.file != str(config_path), p.file, p.line or 0))
    return report


def _as_problem(error: ConfigError, path: Path) -> str:
    """A ConfigError as the message of a Problem: without its leading `<config>:<line>:` (the Problem carries
    file and line, and an annotation would show them twice) and with its fix, which no hint line repeats."""
    message = error.message
    if message.startswith(f"{path}:"):
        message = re.sub(r"^(?:\d+:)?\s*", "", message[len(f"{path}:") :])
    return f"{message}; {error.hint}" if error.hint else message


def _schema_problems(path: Path) -> list[Problem]:
    """Each schema error on its own line (load_config stops at the first); empty when it is not one."""
    try:
        document = read_config_document(path)
    except ConfigError:
        return []
    raw, node = document.data, document.node
    if not isinstance(raw, dict) or node is None:
        return []
    try:
        MlgateConfig.model_validate(raw)
    except ValidationError as exc:
        lines: dict[tuple[str | int, ...], int] = {}
        _key_lines(node, (), lines)
        where = LoadedConfig(model=MlgateConfig.model_construct(project=""), path=path, lines=lines)
        problems = []
        for error in exc.errors():
            # A wrong literal's message already lists the allowed values that the hint would repeat.
            hint = "" if error["type"] == "literal_error" else f"; {_hint_for(error)}"
            message = f"invalid key {_format_location(tuple(error['loc']))}: {error['msg']}{hint}"
            problems.append(Problem("error", "config", message, str(path), where.line_of(*error["loc"]) or 1))
        return problems
    return []


class _Checker:
    def __init__(self, loaded: LoadedConfig, report: CheckReport) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.root = loaded.root
        self.report = report
        self.headers: dict[str, list[str] | None] = {}

    def run(self) -> None:
        self._sources()
        self._environment()
        self._lint()
        self._train()
        self._model_test_files()
        self._data_columns()
        self._model_test_columns()
        self._compress()
        self._workflows()

    # -- reporting -----------------------------------------------------------------------------

    def problem(self, kind: Kind, message: str, *keys: str | int, level: Literal["error", "warning"] = "error") -> None:
        line = self.loaded.line_of(*keys) if keys else None
        self.report.problems.append(Problem(level, kind, message, str(self.loaded.path), line or 1))

    def exists(self, relative: str, what: str, *keys: str | int, directory_ok: bool = True) -> bool:
        """Report `relative` (to the project root) when it is missing; True when it is there."""
        self.report.files += 1
        path = self.root / relative
        if path.is_file() or (directory_ok and path.is_dir()):
            return True
        state = "is a folder, not a file" if path.is_dir() else "does not exist"
        self.problem("input", f"{what}: {relative} {state}{self.under}", *keys)
        return False

    @property
    def under(self) -> str:
        """Where relative paths start, when that is not the working directory."""
        return "" if str(self.root) in ("", ".") else f" (under {self.root})"

    # -- files ---------------------------------------------------------------------------------

    def _sources(self) -> None:
        data = self.model.data
        for name, source in data.sources.items():
            keys = ("data", "sources", name, "path")
            path = self.root / source.path
            self.report.files += 1
            if not path.exists() and data.dvc:
                self.problem(
                    "input",
                    f"data source {name!r}: {source.path} is not pulled: run `dvc pull` (its columns were not checked)",
                    *keys,
                    level="warning",
                )
            elif (state := kind_problem(path)) is not None:
                self.problem("input", f"data source {name!r}: {source.path} {state}{self.under}", *keys)
            elif not source.allow_outside_project and (real := outside_root(self.root, path)) is not None:
                self.problem(
                    "input",
                    f"data source {name!r}: {source.path} resolves through a symlink to {real}, outside the project "
                    f"(it was not read); set data.sources.{name}.allow_outside_project: true to read it from there",
                    *keys,
                )
            elif path.stat().st_size == 0:
                self.problem("input", f"data source {name!r}: {source.path} is empty (0 bytes)", *keys)

    def _environment(self) -> None:
        env = self.model.environment
        if env.constraints:
            self.exists(env.constraints, "environment.constraints", "environment", "constraints", directory_ok=False)
        for index, name in pip_files(env.install):
            what = f"environment.install[{index}] names a file that pip reads"
            self.exists(name, what, "environment", "install", index, directory_ok=False)
        for index, local in pip_local_paths(env.install):
            self.exists(
                local, f"environment.install[{index}] installs a local project", "environment", "install", index
            )

    def _lint(self) -> None:
        lint = self.model.lint
        if not (lint.ruff or lint.format or lint.mypy):
            return
        for index, path in enumerate(lint.paths):
            self.exists(path, f"lint.paths[{index}]", "lint", "paths", index)

    def _train(self) -> None:
        train = self.model.train
        if train is None:
            return
        if not train.profiles:
            self.problem(
                "config",
                "train.profiles is empty: `mlgate train` needs a profile (e.g. quick: {} for pull requests, "
                "full: {} for main)",
                "train",
                "profiles",
            )
        if train.command:
            for word in _command_paths(train.command):
                self.exists(word, "train.command runs", "train", "command", directory_ok=False)
        if train.stage:
            self._stage(train.stage)
        uses_dvc = (self.root / "dvc.yaml").is_file() or self.model.data.dvc
        if uses_dvc and not (self.root / "dvc.lock").is_file():
            self.problem(
                "input",
                "dvc.lock does not exist: `mlgate train` records the DVC hash of each data dependency as "
                "lineage; run `dvc repro` (or `dvc commit`) and commit dvc.lock",
                "train",
            )

    def _stage(self, stage: str) -> None:
        if not self.exists("dvc.yaml", f"train.stage {stage!r} needs", "train", "stage", directory_ok=False):
            return
        try:
            document = parse_yaml(read_text(self.root / "dvc.yaml")).data or {}
        except FileRefused as exc:
            self.problem("input", f"dvc.yaml {exc.reason}", "train", "stage")
            return
        except YamlRefused as exc:
            self.problem("input", f"dvc.yaml:{exc.line or '?'}: {exc.describe()}; {exc.hint}", "train", "stage")
            return
        stages = document.get("stages") if isinstance(document, dict) else None
        declared = sorted(stages) if isinstance(stages, dict) else []
        if stage.split("@")[0] not in declared:
            self.problem(
                "input",
                f"train.stage {stage!r} is not a stage of dvc.yaml (its stages: {', '.join(declared) or 'none'})",
                "train",
                "stage",
            )

    def _model_test_files(self) -> None:
        tests = self.model.model_tests
        if tests is None:
            return
        for index, path in enumerate(tests.tests):
            self.exists(path, f"model_tests.tests[{index}]", "model_tests", "tests", index)

    # -- columns -------------------------------------------------------------------------------

    def columns_of(self, name: str) -> list[str] | None:
        """The header of source `name`, read once; None when it cannot be read (already reported)."""
        if name not in self.headers:
            source = self.model.data.sources.get(name)
            self.headers[name] = self._read_header(name, source) if source else None
            if self.headers[name] is not None:
                self.report.sources += 1
        return self.headers[name]

    def _read_header(self, name: str, source: DataSource) -> list[str] | None:
        path = self.root / source.path
        leaves = not source.allow_outside_project and outside_root(self.root, path) is not None
        if kind_problem(path) is not None or leaves or path.stat().st_size == 0:
            return None  # reported by _sources
        keys = ("data", "sources", name)
        fmt = source.format or (
            "parquet" if path.suffix.lower() in _PARQUET_SUFFIXES else "csv" if path.suffix.lower() in _CSV_SUFFIXES
            else None
        )  # fmt: skip
        if fmt is None:
            self.problem(
                "input",
                f"data source {name!r}: cannot tell the format of {source.path} from its extension; "
                f"set data.sources.{name}.format to csv or parquet",
                *keys,
            )
            return None
        if fmt == "parquet":
            return self._parquet_header(name, source, path)
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                header = next(csv.reader(handle, delimiter=source.delimiter), None)
        except (UnicodeDecodeError, csv.Error) as exc:
            self.problem("input", f"data source {name!r}: {source.path} cannot be read as CSV: {exc}", *keys)
            return None
        if not header:
            self.problem("input", f"data source {name!r}: {source.path} has no header line", *keys)
            return None
        if len(header) == 1:
            for delimiter, shown in _LIKELY_DELIMITERS.items():
                if delimiter != source.delimiter and delimiter in header[0]:
                    self.problem(
                        "input",
                        f"data source {name!r}: the header of {source.path} is one column {header[0][:60]!r}; "
                        f"it looks {shown}-delimited: set data.sources.{name}.delimiter: {shown!r}",
                        *keys,
                    )
                    return None
        return header

    def _parquet_header(self, name: str, source: DataSource, path: Path) -> list[str] | None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            self.problem(
                "input",
                f"data source {name!r}: reading the Parquet schema of {source.path} needs pyarrow "
                "(pip install 'mlgate[data]'); its columns were not checked",
                "data",
                "sources",
                name,
                level="warning",
            )
            return None
        try:
            return [str(column) for column in pq.read_schema(path).names]
        except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
            self.problem(
                "input",
                f"data source {name!r}: {source.path} is not a readable Parquet file: {exc}",
                "data",
                "sources",
                name,
            )
            return None

    def need_column(self, column: str, sources: list[str], what: str, *keys: str | int, any_of: bool = False) -> None:
        """Report `column` (named at `keys` as `what`) where a source lacks it; with `any_of`, one source suffices."""
        readable = {name: cols for name in dict.fromkeys(sources) if (cols := self.columns_of(name)) is not None}
        self.report.columns += bool(readable)
        missing = [name for name, cols in readable.items() if column not in cols]
        if not missing or (any_of and len(missing) < len(readable)):
            return
        first = missing[0]
        cols = readable[first]
        shown = ", ".join(cols[:_SHOWN_COLUMNS]) + (f", … ({len(cols)} in all)" if len(cols) > _SHOWN_COLUMNS else "")
        names = ", ".join(repr(name) for name in missing)
        absent = "in none of the sources" if any_of else "not in source" + ("s" if len(missing) > 1 else "")
        self.problem(
            "input",
            f"{what}: column {column!r} is {absent} {names} ({self.model.data.sources[first].path} has {shown})",
            *keys,
        )

    def _data_columns(self) -> None:
        data = self.model.data
        validated = data.validate_sources or list(data.sources)
        for column in data.expectations.columns:
            self.need_column(column, validated, "data.expectations.columns", "data", "expectations", "columns", column)
        if data.drift:
            pair = [data.drift.reference, data.drift.current]
            for index, column in enumerate(data.drift.features or []):
                self.need_column(column, pair, f"data.drift.features[{index}]", "data", "drift", "features", index)
            for index, column in enumerate(data.drift.exclude):
                self.need_column(column, pair, f"data.drift.exclude[{index}]", "data", "drift", "exclude", index,
                                 any_of=True)  # fmt: skip
        if data.leakage:
            self.need_column(data.leakage.key, list(data.leakage.between), "data.leakage.key", "data", "leakage", "key")

    def _compress(self) -> None:
        compress = self.model.compress
        if compress is None:
            return
        if self.model.model_tests is None:
            self.problem(
                "config",
                "compress needs model_tests (the holdout, label, score and checks every variant must pass); "
                "add model_tests or remove compress",
                "compress",
            )
        if "distill" in compress.methods and compress.distill is None:
            self.problem(
                "config",
                "compress.methods lists distill, but compress.distill (the student) is absent",
                "compress",
                "methods",
            )
        source = compress.quantize.calibration.source
        static_possible = "int8" in compress.methods and compress.quantize.mode != "dynamic"
        if static_possible and source not in self.model.data.sources:
            declared = ", ".join(sorted(self.model.data.sources)) or "none"
            level: Literal["error", "warning"] = "error" if compress.quantize.mode == "static" else "warning"
            self.problem(
                "config",
                f"compress.quantize.calibration.source names {source!r}, which is not declared under data.sources "
                f"(declared: {declared}); a network with a Conv layer has no calibration data for static INT8",
                "compress",
                "quantize",
                "calibration",
                "source",
                level=level,
            )

    def _model_test_columns(self) -> None:
        tests = self.model.model_tests
        if tests is None:
            return
        if tests.holdout not in self.model.data.sources:
            declared = ", ".join(sorted(self.model.data.sources)) or "none"
            self.problem(
                "config",
                f"model_tests.holdout names source {tests.holdout!r}, which is not declared under data.sources "
                f"(declared: {declared})",
                "model_tests",
                "holdout",
            )
            return
        holdout = [tests.holdout]
        self.need_column(tests.label, holdout, "model_tests.label", "model_tests", "label")
        for index, check in enumerate(tests.performance.slices):
            keys = ("model_tests", "performance", "slices", index, "column")
            self.need_column(check.column, holdout, f"model_tests.performance.slices[{index}].column", *keys)
        behavioral = tests.behavioral
        families: list[tuple[str, list[Any]]] = [
            ("minimum_functionality", list(behavioral.minimum_functionality)),
            ("invariance", list(behavioral.invariance)),
            ("directional", list(behavioral.directional)),
        ]
        for family, cases in families:
            for index, case in enumerate(cases):
                base = ("model_tests", "behavioral", family, index)
                where = f"model_tests.behavioral.{family}[{index}]"
                if isinstance(getattr(case, "column", None), str):
                    self.need_column(case.column, holdout, f"{where}.column", *base, "column")
                for mapping in ("set", "where"):
                    for column in getattr(case, mapping, None) or {}:
                        self.need_column(str(column), holdout, f"{where}.{mapping}", *base, mapping, str(column))

    # -- workflows -----------------------------------------------------------------------------

    def _workflows(self) -> None:
        for workflow in workflow_files(self.root):
            try:
                node = parse_yaml(read_text(workflow)).node
            except FileRefused:
                continue
            except YamlRefused as exc:
                if not exc.syntax:
                    # Valid YAML read differently by each tool (a duplicate key, an alias bomb): GitHub refuses it.
                    self.workflow_problem(workflow, exc.line or 1, f"{exc.problem}; {exc.hint}")
                continue  # a syntax error is actionlint's job, not ours
            repo_root = workflow.parent.parent.parent
            for call in _profile_calls(node):
                if "${{" in call.config or "${{" in call.working_directory:
                    # Which config it runs is decided at run time (a reusable workflow passing its own
                    # inputs on): only a literal profile it asks for can be held against this one.
                    self._workflow_profile(workflow, call)
                elif (repo_root / call.working_directory / call.config).resolve() == self.loaded.path.resolve():
                    self._workflow_call(workflow, call)

    def _workflow_call(self, workflow: Path, call: _Call) -> None:
        """A workflow that certainly runs this config: the sections its jobs need, and its profile."""
        if call.train_off:
            return
        name = self.loaded.path.name
        if call.test_model and self.model.model_tests is None:
            self.workflow_problem(
                workflow,
                call.uses_line,
                f"{call.target} runs the test-model job (unless test-model: false), but {name} has no "
                "model_tests section; add one or pass test-model: false",
            )
        if self.model.train is None:
            off = ", or pass train: false" if call.target == "ml-ci.yml" else ""
            self.workflow_problem(
                workflow,
                call.uses_line,
                f"{call.target} runs mlgate's train step, but {name} has no train section; "
                f"add train.command and train.profiles{off}",
            )
            return
        self._workflow_profile(workflow, call)

    def _workflow_profile(self, workflow: Path, call: _Call) -> None:
        train = self.model.train
        if train is None or call.train_off or "${{" in call.profile:
            return  # no training here, or a profile known only at run time
        self.report.profiles += 1
        if call.profile not in train.profiles:
            declared = ", ".join(sorted(train.profiles)) or "none"
            given = f"input {call.input}" if call.explicit else f"the default of its {call.input} input"
            self.workflow_problem(
                workflow,
                call.profile_line,
                f"{call.target} trains profile {call.profile!r} ({given}), which is not declared under "
                f"train.profiles in {self.loaded.path.name} (declared: {declared})",
            )

    def workflow_problem(self, workflow: Path, line: int, message: str) -> None:
        self.report.problems.append(Problem("error", "config", message, str(workflow), line))


def _command_paths(command: str) -> list[str]:
    """The files a training command runs: its first word if a path, and an interpreter's script."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    if not words:
        return []
    found = [words[0]] if "/" in words[0] and not Path(words[0]).is_absolute() else []
    if _INTERPRETERS.match(Path(words[0]).name):
        for word in words[1:]:
            if word in ("-m", "-c"):
                break
            if word.startswith("-"):
                continue
            if word.endswith((".py", ".sh", ".R")) or "/" in word:
                found.append(word)
            break
    return [word for word in found if not Path(word).is_absolute()]


@dataclass(frozen=True)
class _Call:
    """One use of mlgate's training in a workflow: a reusable-workflow job or a train-action step."""

    target: str
    input: str
    profile: str
    explicit: bool
    config: str
    working_directory: str
    train_off: bool
    test_model: bool
    uses_line: int
    profile_line: int  # the `uses:` line when the profile is the default


def _get(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return key_node, value_node
    return None


def _scalar(node: yaml.Node | None, key: str) -> tuple[str, int] | None:
    found = _get(node, key)
    if found and isinstance(found[1], yaml.ScalarNode):
        return str(found[1].value), found[0].start_mark.line + 1
    return None


def _profile_calls(document: yaml.Node | None) -> Iterator[_Call]:
    jobs = _get(document, "jobs")
    if not jobs or not isinstance(jobs[1], yaml.MappingNode):
        return
    for _, job in jobs[1].value:
        uses = _scalar(job, "uses")
        if uses and (match := _REUSABLE.search(uses[0])):
            yield _call(f"{match.group(1)}.yml", *_WORKFLOW_PROFILE[match.group(1)], job, uses[1])
        steps = _get(job, "steps")
        if steps and isinstance(steps[1], yaml.SequenceNode):
            for step in steps[1].value:
                step_uses = _scalar(step, "uses")
                if step_uses and _TRAIN_ACTION.search(step_uses[0]):
                    yield _call("the train action", "profile", "quick", step, step_uses[1])


def _call(target: str, profile_input: str, default: str, node: yaml.Node, uses_line: int) -> _Call:
    with_node = _get(node, "with")
    inputs = with_node[1] if with_node else None
    profile = _scalar(inputs, profile_input)
    ci = target == "ml-ci.yml"

    def off(name: str) -> bool:
        value = _scalar(inputs, name)
        return value is not None and value[0].strip().lower() == "false"

    return _Call(
        target=target,
        input=profile_input,
        profile=profile[0] if profile else default,
        explicit=profile is not None,
        config=(_scalar(inputs, "config") or ("mlgate.yaml", 0))[0],
        working_directory=(_scalar(inputs, "working-directory") or (".", 0))[0],
        train_off=ci and off("train"),
        test_model=ci and not off("test-model"),
        uses_line=uses_line,
        profile_line=profile[1] if profile else uses_line,
    )


__all__ = ["CheckReport", "Problem", "check_config"]
