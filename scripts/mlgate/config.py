"""The typed model of `mlgate.yaml`, its loader, and where each key sits in the file."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlgate.errors import ConfigError
from mlgate.paths import escapes_lexically, kind_problem, outside_root, pip_file_urls, pip_files, pip_local_paths
from mlgate.yamlio import YamlDocument, load_yaml_file

DEFAULT_CONFIG = "mlgate.yaml"
# mlgate.yaml is a few kilobytes; past a megabyte it is not a config.
MAX_CONFIG_BYTES = 1 << 20


class _Model(BaseModel):
    # Unknown keys are errors: a typo must not silently switch a check off. No number key takes NaN or infinity
    # (`.nan`, `.inf` in YAML): a NaN bound passes every comparison, an infinite time never ends; the values a
    # test writes into the data (DataValue) are the one exception.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# A value written into holdout rows (a perturbation's `set` and `replace`, a minimum-functionality case's `set`):
# NaN and infinity there are rows the model must handle, not a bad setting.
DataValue = str | int | Annotated[float, Field(allow_inf_nan=True)] | bool
# A seed of Python's, NumPy's and torch's generators and of pandas' samples: NumPy takes 0 to 2**32 - 1.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# A tolerance or margin on a holdout metric, which lies in [0, 1]: more than 1 is no bound at all.
MetricDelta = Annotated[float, Field(ge=0, le=1)]


class LintConfig(_Model):
    """The lint gate: ruff check, ruff format --check and mypy over the model project."""

    paths: list[str] = Field(default_factory=lambda: ["."], description="Files and folders to lint.")
    ruff: bool = Field(True, description="Run `ruff check`.")
    format: bool = Field(True, description="Run `ruff format --check`.")
    mypy: bool = Field(True, description="Run mypy.")
    strict: bool = Field(False, description="Run mypy with --strict.")


class EnvironmentConfig(_Model):
    """The model project's own Python environment, for the gates that run its code or read its types."""

    install: list[str] = Field(
        default_factory=list,
        description=(
            "Arguments of `pip install` that install the project and its dependencies into a venv of its "
            "own, e.g. `[-e, '.[lint]']` or `[-r, requirements.txt]`. Empty: no project venv (mypy then "
            "sees only the files under lint.paths)."
        ),
    )
    constraints: str | None = Field(
        None,
        description="A pip constraints file (relative to the project) that pins what `install` may resolve.",
    )


class DataSource(_Model):
    """A data file the gates read. CSV (any delimiter) or Parquet, by extension or `format`."""

    path: str = Field(
        description="Path relative to the project root; it must stay inside the project (symlinks followed) "
        "unless allow_outside_project is set."
    )
    allow_outside_project: bool = Field(
        False,
        description="Let `path` be absolute, climb out with `..`, or be a symlink leaving the project "
        "(e.g. a DVC cache of symlinks on a shared disk).",
    )
    format: Literal["csv", "parquet"] | None = Field(None, description="Default: from the extension.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter.")


ColumnType = Literal["int", "float", "str", "bool", "datetime"]


class ColumnExpectation(_Model):
    """Expectations on one column, each run as a Great Expectations expectation."""

    type: ColumnType | None = Field(None, description="Logical type: int, float, str, bool or datetime.")
    not_null: bool = Field(True, description="Values must not be null (at least `mostly` of them).")
    min: float | None = Field(None, description="Smallest allowed value (inclusive).")
    max: float | None = Field(None, description="Largest allowed value (inclusive).")
    allowed: list[str | int | float | bool] | None = Field(None, description="The allowed values.")
    unique: bool = Field(False, description="Values must be unique.")
    mostly: float = Field(1.0, gt=0.0, le=1.0, description="Share of rows that must pass not_null, range and allowed.")

    @model_validator(mode="after")
    def _range_ordered(self) -> ColumnExpectation:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class RowCount(_Model):
    min: int = Field(1, ge=0)
    max: int | None = Field(None, ge=0)


class Expectations(_Model):
    """The Great Expectations suite, declared rather than written in Python."""

    row_count: RowCount = Field(default_factory=lambda: RowCount())
    exact_columns: bool = Field(False, description="The file must have exactly the declared columns (no extra ones).")
    columns: dict[str, ColumnExpectation] = Field(default_factory=dict)


class PsiThresholds(_Model):
    warn: float = Field(0.1, ge=0.0, description="PSI at or above this is reported as a warning.")
    fail: float = Field(0.25, ge=0.0, description="PSI at or above this fails the gate.")
    bins: int = Field(10, ge=2, le=100, description="Quantile bins of the reference, numeric features.")

    @model_validator(mode="after")
    def _ordered(self) -> PsiThresholds:
        if self.warn > self.fail:
            raise ValueError(f"warn ({self.warn}) must not exceed fail ({self.fail})")
        return self


class TestThreshold(_Model):
    pvalue: float = Field(0.01, gt=0.0, lt=1.0, description="Significance level.")
    min_effect: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description=(
            "Smallest effect that counts as drift (KS statistic; Cramer's V for chi-square): "
            "on large samples a tiny, harmless shift is still significant."
        ),
    )


class DriftConfig(_Model):
    """Drift of each feature of `current` against `reference`."""

    reference: str = Field(description="Name of the reference source.")
    current: str = Field(description="Name of the source compared with the reference.")
    features: list[str] | None = Field(None, description="Default: every column both share.")
    exclude: list[str] = Field(default_factory=list, description="Columns never compared (ids, labels).")
    psi: PsiThresholds = Field(default_factory=lambda: PsiThresholds())
    ks: TestThreshold = Field(default_factory=lambda: TestThreshold())
    chi2: TestThreshold = Field(default_factory=lambda: TestThreshold())


class LeakageConfig(_Model):
    """Rows of one source must not appear in another, by a key column."""

    key: str
    between: tuple[str, str] = Field(description="Two source names, e.g. [train, test].")


class DataConfig(_Model):
    dvc: bool = Field(False, description="Run `dvc pull` for the sources before validating.")
    sources: dict[str, DataSource] = Field(default_factory=dict)
    validate_sources: list[str] = Field(
        default_factory=list,
        alias="validate",
        description="Sources the expectation suite runs on. Default: every source.",
    )
    expectations: Expectations = Field(default_factory=lambda: Expectations())
    drift: DriftConfig | None = None
    leakage: LeakageConfig | None = None

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    @model_validator(mode="after")
    def _names_known(self) -> DataConfig:
        known = set(self.sources)
        named: list[tuple[str, str]] = [(f"validate[{i}]", n) for i, n in enumerate(self.validate_sources)]
        if self.drift:
            named += [("drift.reference", self.drift.reference), ("drift.current", self.drift.current)]
        if self.leakage:
            named += [(f"leakage.between[{i}]", n) for i, n in enumerate(self.leakage.between)]
        for where, name in named:
            if name not in known:
                raise ValueError(
                    f"{where} names source {name!r}, which is not declared under data.sources "
                    f"(declared: {', '.join(sorted(known)) or 'none'})"
                )
        return self


class DistributedConfig(_Model):
    """Training through PyTorch's launcher (torchrun, DistributedDataParallel): processes on this runner and,
    for a job spread over several runners, the nodes and their rendezvous."""

    nproc_per_node: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto",
        description="Processes on each node: `auto` is one per visible GPU (one process when no GPU is visible, "
        "said in the log), or a number (CPU processes with Gloo on a CPU device).",
    )
    nnodes: int = Field(
        1, ge=1, description="Nodes (runners) taking part; each runs `mlgate train` with its node_rank."
    )
    node_rank: int = Field(
        0,
        ge=0,
        description="This node's rank, 0 to nnodes-1 (usually the workflow input); node 0 opens the MLflow run.",
    )
    rdzv_endpoint: str | None = Field(
        None,
        description="host:port of node 0, where the nodes meet (torchrun's static rendezvous); needed when nnodes > 1.",
    )
    rdzv_id: str | None = Field(
        None,
        description="The job's id, the same on every node (tagged on the MLflow run); default: the workflow run's id "
        "and attempt (GITHUB_RUN_ID-GITHUB_RUN_ATTEMPT), else `mlgate`.",
    )

    @model_validator(mode="after")
    def _nodes(self) -> DistributedConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"train.distributed.node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("train.distributed.rdzv_endpoint (host:port of node 0) is needed when nnodes > 1")
        if self.rdzv_endpoint is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", self.rdzv_endpoint):
            raise ValueError(f"train.distributed.rdzv_endpoint {self.rdzv_endpoint!r} is not host:port")
        return self


def _distributed_schema(schema: dict[str, Any]) -> None:
    # The shorthands the validator accepts, beside the mapping: what an editor checks mlgate.yaml against.
    mapping = [branch for branch in schema.pop("anyOf", []) if branch.get("type") != "null"]
    schema["anyOf"] = [{"enum": ["none", "auto"]}, {"type": "integer", "minimum": 1}, *mapping]
    schema["default"] = "none"


class TrainConfig(_Model):
    """The training gate: how the project trains, with which profiles, tracked in MLflow."""

    command: str | None = Field(
        None,
        description="Training command, run from the project root in the project venv, e.g. `python -m fraud.train`.",
    )
    stage: str | None = Field(
        None, description="Instead of `command`: a DVC stage, run as `dvc repro --force --single-item <stage>`."
    )
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Named parameter sets (e.g. `quick` for pull requests, `full` for main); the chosen one reaches the "
            "training code as `mlgate_runtime.setup().params` and is logged as MLflow params."
        ),
    )
    seed: Seed = Field(42, description="Seed of Python, NumPy, torch and CUDA generators, 0 to 2^32 - 1.")
    deterministic: bool = Field(False, description="Force deterministic torch kernels (slower on GPU).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto`: CUDA when a GPU is visible, else CPU (said in the summary)."
    )
    require_gpu: bool = Field(False, description="Fail at once when no CUDA GPU is visible.")
    experiment: str | None = Field(None, description="MLflow experiment name; default: the project name.")
    metrics: list[str] = Field(
        default_factory=list,
        description="Holdout metrics the training must log (e.g. holdout_roc_auc); the repro check compares them.",
    )
    repro_tolerance: float = Field(
        1e-6, ge=0, description="Largest absolute difference of each metric between two same-seed runs."
    )
    log_model: bool = Field(True, description="Require the run to log a model (`log_model(name=...)`).")
    distributed: DistributedConfig | None = Field(
        None,
        description="`none`: one process (default). `auto`: one torchrun process per visible GPU of this runner. "
        "A number: that many processes. A mapping: nproc_per_node, and nnodes, node_rank, rdzv_endpoint, rdzv_id "
        "for a job on several runners. The training code calls mlgate_runtime.setup(), which joins the group.",
        json_schema_extra=_distributed_schema,
    )

    @field_validator("distributed", mode="before")
    @classmethod
    def _distributed_shorthand(cls, value: Any) -> Any:
        # One shape after this: None, or the mapping (a bare `auto` or number is one node's processes).
        if value is None or value == "none":
            return None
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            if isinstance(value, int) and value < 1:
                raise ValueError(f"train.distributed {value} must be at least 1 process")
            return {"nproc_per_node": value}
        if isinstance(value, dict):
            return value
        raise ValueError(
            f"train.distributed {value!r} is none of: none, auto, a number of processes, or a mapping "
            "(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv_id)"
        )

    @model_validator(mode="after")
    def _one_way_to_train(self) -> TrainConfig:
        if bool(self.command) == bool(self.stage):
            raise ValueError("set exactly one of train.command (a shell command) and train.stage (a DVC stage)")
        if self.stage and self.distributed is not None:
            raise ValueError(
                "train.distributed needs train.command (mlgate starts it through torchrun); a DVC stage's cmd "
                "would have to call torchrun itself"
            )
        return self


PerformanceMetric = Literal["accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "recall_at_precision"]
THRESHOLD_METRIC_NAMES = ("accuracy", "precision", "recall", "f1")


class MetricThresholds(_Model):
    """Lower bounds on holdout metrics; an absent metric is computed and reported, never gated."""

    accuracy: float | None = Field(None, ge=0, le=1, description="Smallest allowed accuracy at the threshold.")
    precision: float | None = Field(None, ge=0, le=1, description="Smallest allowed precision at the threshold.")
    recall: float | None = Field(None, ge=0, le=1, description="Smallest allowed recall at the threshold.")
    f1: float | None = Field(None, ge=0, le=1, description="Smallest allowed F1 at the threshold.")
    roc_auc: float | None = Field(None, ge=0, le=1, description="Smallest allowed ROC AUC.")
    pr_auc: float | None = Field(None, ge=0, le=1, description="Smallest allowed PR AUC (average precision).")
    recall_at_precision: float | None = Field(
        None, ge=0, le=1, description="Smallest allowed recall at precision >= performance.at_precision."
    )

    def bounds(self) -> dict[str, float]:
        return {name: value for name, value in self.model_dump().items() if value is not None}


class SliceCheck(_Model):
    """The same metrics on each value of one column (e.g. per country)."""

    column: str = Field(description="Holdout column whose values define the slices.")
    metrics: MetricThresholds = Field(description="Lower bounds that every slice must meet.")
    min_rows: int = Field(100, ge=1, description="Slices with fewer rows are reported, not gated.")


class LatencyBudget(_Model):
    """A latency budget of the candidate's `predict` at one batch size, in milliseconds per call."""

    batch: int = Field(ge=1, description="Rows per predict call.")
    p50_ms: float | None = Field(None, gt=0, description="Largest allowed median latency.")
    p95_ms: float | None = Field(None, gt=0, description="Largest allowed 95th-percentile latency.")


class PerformanceChecks(_Model):
    metrics: MetricThresholds = Field(
        default_factory=lambda: MetricThresholds(), description="Lower bounds on the whole holdout."
    )
    at_precision: float = Field(0.5, gt=0, le=1, description="Precision at which recall_at_precision is read.")
    slices: list[SliceCheck] = Field(default_factory=list)
    latency: list[LatencyBudget] = Field(default_factory=list, description="Budgets per batch size.")
    latency_repeats: int = Field(
        30,
        ge=3,
        le=10000,
        description="Timed calls per batch size in each of 3 rounds, after 3 warm-ups; the round with the "
        "lowest p95 counts.",
    )
    latency_threads: int = Field(
        1,
        ge=1,
        le=1024,
        description="Intra-op threads the models may use while their latency is measured: BLAS/OpenMP pools "
        "(through threadpoolctl) and torch (`torch.set_num_threads`) are pinned to it and restored afterwards, "
        "and the latency results state it. A threaded model on a busy shared runner otherwise measures the "
        "runner's other load; set the serving machine's thread count to budget for it.",
    )


class Perturbation(_Model):
    """How a column is changed: exactly one of the keys."""

    add: float | None = Field(None, description="Add this number (numeric columns).")
    scale: float | None = Field(None, description="Multiply by this number (numeric columns).")
    set: DataValue | None = Field(None, description="Replace every value with this one.")
    replace: dict[DataValue, DataValue] | None = Field(None, description="Map values (e.g. {US: GB} or {0: 1}).")
    shuffle: bool = Field(False, description="Permute the column across rows (seeded).")
    clip: bool = Field(
        False,
        description="Clip results into the range of data.expectations.columns.<column>; without it an "
        "out-of-range result is an error, not a silent test on impossible rows.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Perturbation:
        given = [k for k in ("add", "scale", "set", "replace") if getattr(self, k) is not None]
        given += ["shuffle"] if self.shuffle else []
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of add, scale, set, replace, shuffle (got {', '.join(given) or 'none'})"
            )
        return self


Scalar = str | int | float | bool
WHERE_DESCRIPTION = (
    "Only holdout rows matching every entry take part: `{column: value}` keeps rows equal to the value, "
    "`{column: [a, b]}` rows holding one of the values. The `rows` sample is drawn from the matching rows; "
    "a filter that matches no row is an error."
)


class MinimumFunctionalityCase(_Model):
    """CheckList MFT: holdout rows with some columns set must get the expected label."""

    name: str
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, description=WHERE_DESCRIPTION)
    set: dict[str, DataValue] = Field(description="Columns set on every sampled row.")
    expect: Literal[0, 1] = Field(description="The label the model must predict (score >= threshold is 1).")
    rows: int = Field(200, ge=1, description="Holdout rows (matching `where`) sampled, seeded, as the templates.")
    pass_rate: float = Field(1.0, gt=0, le=1, description="Share of rows that must get the expected label.")


class InvarianceCase(_Model):
    """CheckList INV: a change to a column that must not matter moves the score by at most `tolerance`.

    Only the sampled rows the perturbation changes are in scope (a `replace` of one category leaves
    the others as they were); the pass rate is a share of them.
    """

    name: str
    column: str
    perturb: Perturbation
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, description=WHERE_DESCRIPTION)
    tolerance: float = Field(0.01, ge=0, description="Largest allowed |score change| of a row.")
    pass_rate: float = Field(
        0.99,
        gt=0,
        le=1,
        description="Share of the rows in scope (those the perturbation changes) within the tolerance.",
    )
    rows: int = Field(1000, ge=1, description="Holdout rows (matching `where`) sampled, seeded.")


class DirectionalCase(_Model):
    """CheckList DIR: a change to a column must move the score in one direction.

    Only the sampled rows the perturbation changes are in scope; the pass rate is a share of them.
    """

    name: str
    column: str
    perturb: Perturbation
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, description=WHERE_DESCRIPTION)
    expect: Literal["increase", "decrease", "not_decrease", "not_increase"] = Field(
        description="increase/decrease: the score must move by more than `tolerance` that way; "
        "not_decrease/not_increase: it may move the other way by at most `tolerance`."
    )
    tolerance: float = Field(0.0, ge=0, description="See `expect`.")
    pass_rate: float = Field(
        0.9, gt=0, le=1, description="Share of the rows in scope (those the perturbation changes) that must pass."
    )
    rows: int = Field(1000, ge=1, description="Holdout rows (matching `where`) sampled, seeded.")


class BehavioralChecks(_Model):
    minimum_functionality: list[MinimumFunctionalityCase] = Field(default_factory=list)
    invariance: list[InvarianceCase] = Field(default_factory=list)
    directional: list[DirectionalCase] = Field(default_factory=list)


class BaselineChecks(_Model):
    """The candidate against the production model (`models:/<model>@<alias>`) on the same holdout."""

    model: str = Field(description="Registered model name in the MLflow registry.")
    alias: str = Field("champion", description="Alias of the production version.")

    @field_validator("alias")
    @classmethod
    def _mlflow_alias(cls, value: str) -> str:
        # MLflow refuses these at the server (set_registered_model_alias): say so before anything runs.
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", value):
            raise ValueError(f"{value!r} is not an MLflow alias: letters, digits, '_' and '-' only")
        if value.lower() == "latest" or re.fullmatch(r"[vV]\d+", value):
            raise ValueError(f"{value!r} is reserved by MLflow ('latest' and v<number> name versions)")
        return value

    max_regression: dict[PerformanceMetric, MetricDelta] = Field(
        default_factory=dict,
        description="Per metric, how far below the champion the candidate may be (e.g. {f1: 0.005}).",
    )
    max_latency_ratio: float | None = Field(
        None, gt=0, description="Candidate p95 / champion p95 at the largest latency batch, at most."
    )
    promotion_metric: PerformanceMetric = Field("roc_auc", description="The metric that decides `promotable`.")
    promotion_margin: float = Field(
        0.0, ge=0, le=1, description="Promotable: every check passes and promotion_metric beats the champion by this."
    )
    allow_signature_change: bool = Field(
        False,
        description="Compare even when the champion's input signature differs (each model reads its own "
        "columns from the holdout); off, a differing signature is an error.",
    )


class ThresholdFromModel(_Model):
    metadata: str = Field(description="Key of the MLmodel metadata holding the decision threshold.")
    default: float = Field(0.5, ge=0, le=1, description="Used when the model has no such key.")


class ModelTestsConfig(_Model):
    """The model-test gate: behavioral, performance and baseline checks, plus the project's own model tests."""

    holdout: str = Field(description="Name of the data source (under data.sources) the models are tested on.")
    label: str = Field(description="Column of the true label (0/1).")
    score: str | Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="Which output of the model's predict is the positive-class score: a column name (a "
        "DataFrame output) or a 0-based position (an array with one column per class, e.g. 1 for scikit-learn's "
        "predict_proba; or a DataFrame's column). A 1-D or one-column output needs none; several columns "
        "without it is an error listing them.",
    )
    threshold: Annotated[float, Field(ge=0, le=1)] | ThresholdFromModel = Field(
        0.5,
        description="Decision threshold on the score, from 0 to 1 (score >= it is positive), or {metadata: <key>} "
        "of each model.",
    )
    max_rows: int | None = Field(None, ge=1, description="Seeded sample of the holdout; default: every row.")
    seed: Seed = Field(0, description="Seed of the samples and shuffles, 0 to 2^32 - 1.")
    tests: list[str] = Field(
        default_factory=list, description="The project's own pytest model tests (files or folders), run with them."
    )
    performance: PerformanceChecks = Field(default_factory=lambda: PerformanceChecks())
    behavioral: BehavioralChecks = Field(default_factory=lambda: BehavioralChecks())
    baseline: BaselineChecks | None = Field(None, description="Absent: no comparison with production.")

    @field_validator("score", mode="before")
    @classmethod
    def _name_or_index(cls, value: Any) -> Any:
        # YAML `score: 1` is an index and `score: "1"` a column name; pydantic alone would coerce `true` to 1
        # and report a negative index twice, once per member of the union.
        if value is None or isinstance(value, str) or (type(value) is int and value >= 0):
            return value
        raise ValueError(f"give an output column name or a 0-based column index, not {value!r}")


CompressMethod = Literal["onnx", "int8", "prune", "distill"]


class ParityLimits(_Model):
    """How far the FP32 ONNX export may stray from the original model on the holdout."""

    max_abs_diff: float = Field(1e-4, ge=0, description="Largest allowed |score difference| of a holdout row.")
    max_flip_rate: float = Field(
        0.0, ge=0, le=1, description="Largest allowed share of holdout rows whose decision flips at the threshold."
    )


class CalibrationConfig(_Model):
    source: str = Field("train", description="Data source (under data.sources) the calibration rows are drawn from.")
    rows: int = Field(512, ge=16, le=100000, description="Rows drawn (seeded) for static quantization's calibration.")


class QuantizeConfig(_Model):
    """INT8 post-training quantization with onnxruntime."""

    mode: Literal["auto", "dynamic", "static"] = Field(
        "auto",
        description="`dynamic` (weights INT8, activations quantized on the fly: Linear/MatMul networks), `static` "
        "(QDQ with a calibration set: convolutional networks), or `auto`: static when the graph has a Conv, "
        "else dynamic.",
    )
    calibration: CalibrationConfig = Field(default_factory=lambda: CalibrationConfig())


class PruneConfig(_Model):
    """Structured pruning (whole neurons and channels, with torch-pruning), then a short fine-tune."""

    ratio: float = Field(0.5, gt=0, lt=1, description="Share of the neurons/channels of each prunable layer removed.")
    epochs: int = Field(2, ge=0, le=1000, description="Fine-tune epochs after pruning (the project's training step).")
    lr: float = Field(1e-3, gt=0, description="Learning rate (AdamW) of the fine-tune.")


class DistillConfig(_Model):
    """Knowledge distillation into a smaller student the project builds from `student`."""

    student: dict[str, Any] = Field(description="Keyword arguments of the project's student builder.")
    temperature: float = Field(2.0, gt=0, description="Softmax/sigmoid temperature of the soft targets.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the hard-label loss; 1 - alpha goes to the soft one.")
    epochs: int = Field(3, ge=1, le=1000, description="Training epochs of the student.")
    lr: float = Field(3e-3, gt=0, description="Learning rate (AdamW) of the student.")


class CompressBudgets(_Model):
    """What the selected variant must meet; a variant outside any budget is not selected."""

    max_size_mb: float | None = Field(None, gt=0, description="Largest allowed model file (ONNX) in MB (10^6 bytes).")
    latency: LatencyBudget | None = Field(
        None, description="Largest allowed p95 latency of the variant's predict at a batch size (threads pinned)."
    )
    max_metric_drop: dict[PerformanceMetric, MetricDelta] = Field(
        default_factory=dict,
        description="Largest allowed drop of a holdout metric against the original, e.g. {roc_auc: 0.005}.",
    )


class CompressConfig(_Model):
    """The compress gate: smaller, faster ONNX variants of the candidate, measured and re-tested."""

    methods: list[CompressMethod] = Field(
        default_factory=lambda: list[CompressMethod](["onnx", "int8"]),
        min_length=1,
        description="Variants to build: `onnx` (FP32 export), `int8` (quantized copy of every FP32 variant), "
        "`prune` (structured, torch), `distill` (into `distill.student`, torch). Order of combination: "
        "prune -> distil -> quantize.",
    )
    threads: int = Field(1, ge=1, le=256, description="onnxruntime intra-op threads inside each variant.")
    parity: ParityLimits = Field(default_factory=lambda: ParityLimits())
    quantize: QuantizeConfig = Field(default_factory=lambda: QuantizeConfig())
    prune: PruneConfig | None = Field(None, description="Settings of `prune`; default ones when absent.")
    distill: DistillConfig | None = Field(None, description="Needed by `distill`: the student and its training.")
    budgets: CompressBudgets = Field(default_factory=lambda: CompressBudgets())
    latency_batches: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 1000], min_length=1, description="Batch sizes of the latency report."
    )
    latency_repeats: int = Field(
        30,
        ge=3,
        le=10000,
        description="Timed calls per batch size in each of 3 rounds, after 3 warm-ups; the round with the "
        "lowest p95 counts.",
    )


class PromotionRule(_Model):
    """When `mlgate registry promote` may move `@champion` to the challenger."""

    require_model_tests: bool = Field(
        True, description="The challenger's model tests (recorded at register) must have passed."
    )
    metric: PerformanceMetric | None = Field(
        None, description="Metric the challenger must beat the champion on; default model_tests.baseline's."
    )
    margin: float | None = Field(
        None, ge=0, le=1, description="By at least this much; default model_tests.baseline.promotion_margin (else 0)."
    )
    guards: dict[PerformanceMetric, MetricDelta] = Field(
        default_factory=dict,
        description="Metrics that may be worse than the champion's by at most this much, e.g. {pr_auc: 0.01}.",
    )


class RegistryConfig(_Model):
    """The MLflow model registry: where releases are registered, promoted and rolled back (aliases)."""

    model: str | None = Field(
        None, description="Registered model name; default model_tests.baseline.model, else the project name."
    )
    promotion: PromotionRule = Field(default_factory=lambda: PromotionRule())
    audit_experiment: str = Field(
        "mlgate-audit", min_length=1, description="MLflow experiment holding the append-only audit log (one run each)."
    )


class ServeConfig(_Model):
    """`mlgate serve`, the model server of each side of a rollout (`mlgate traffic up` starts two)."""

    max_body_bytes: int = Field(
        1 << 20,  # mlgate.serve.payload.DEFAULT_MAX_BODY_BYTES (tests/unit/test_serve.py checks they agree)
        ge=1,
        le=1 << 30,
        description="Largest prediction request body in bytes, 1 MiB by default as nginx's client_max_body_size; "
        "a larger one is answered 413 (from its Content-Length, or as soon as a chunked body passes it) and "
        "counted as a client error. `mlgate traffic up` passes it to both servers (`--max-body-bytes`); keep "
        "traffic.nginx.max_body_mb at or above it, or nginx refuses the body first, where no server counts it.",
    )


TRAFFIC_HEADER = r"^[A-Za-z0-9][A-Za-z0-9-]*$"


class NginxTrafficConfig(_Model):
    """The embedded traffic backend: nginx, started by `mlgate traffic up` in a prefix folder of its own, on 127.0.0.1
    only, in front of a stable and a canary `mlgate serve`."""

    listen_port: int = Field(8080, ge=1, le=65535, description="Port nginx listens on (127.0.0.1 only).")
    prefix: str = Field(
        ".mlgate/traffic",
        min_length=1,
        description="nginx's prefix folder, relative to the project root: its config, pid, logs, temp folders and "
        "the state file of the split (state.json). Keep it out of git (`.mlgate/` in .gitignore).",
    )
    split: Literal["request", "header"] = Field(
        "request",
        description="`request`: each request is routed on its own (split_clients on nginx's $request_id); "
        "`header`: by the value of `header`, so one user always meets the same model (A/B tests); a request "
        "without the header is routed on its own.",
    )
    header: str = Field(
        "X-User-ID", pattern=TRAFFIC_HEADER, description="The request header of `split: header`, e.g. X-User-ID."
    )
    workers: int = Field(1, ge=1, le=64, description="nginx worker processes.")
    max_body_mb: int = Field(
        16, ge=1, le=1024, description="Largest request body in MB; bodies are kept in memory, never spooled to disk."
    )
    client_keepalive: bool = Field(
        False,
        description="Keep client connections open between requests. Off (default): every request has its own "
        "connection, so a weight change (a graceful reload, whose old workers close idle keep-alive connections) "
        "loses no request; on: less latency per request, for clients that retry a request sent on a connection "
        "the server closed.",
    )
    binary: str = Field("nginx", min_length=1, description="The nginx executable: a name looked up on PATH, or a path.")
    ready_timeout_s: float = Field(
        120, gt=0, le=3600, description="How long `mlgate traffic up` waits for both model servers' /ready."
    )


class CommandTrafficConfig(_Model):
    """The `command` traffic backend: a command of yours applies the weights to any router (KServe, Istio, Argo
    Rollouts)."""

    run: str = Field(
        min_length=1,
        description="The command, split into words as a shell would (no shell runs it), run from the project root. "
        "It gets the split as its last three arguments, `STABLE CANARY MIRROR` (e.g. `90 10 off`), and in "
        "MLGATE_STABLE_WEIGHT, MLGATE_CANARY_WEIGHT and MLGATE_MIRROR (on/off); it must exit 0 once the router "
        "has the weights, and applying the same weights twice must be harmless.",
    )
    timeout_s: float = Field(
        120, gt=0, le=3600, description="Longest run of the command; past it, it is killed with its process group."
    )
    state_file: str = Field(
        ".mlgate/traffic/command.json",
        min_length=1,
        description="Where the last split the command applied is recorded, relative to the project root.",
    )


class TrafficConfig(_Model):
    """How requests reach the stable and the canary model: the embedded nginx, or a command of yours."""

    backend: Literal["nginx", "command"] = Field(
        "nginx",
        description="`nginx`: mlgate runs nginx on loopback in front of two `mlgate serve` (`mlgate traffic up`); "
        "`command`: `traffic.command.run` applies the weights to your router.",
    )
    nginx: NginxTrafficConfig = Field(default_factory=lambda: NginxTrafficConfig())
    command: CommandTrafficConfig | None = Field(None, description="Needed by `backend: command`.")

    @model_validator(mode="after")
    def _command_needs_its_settings(self) -> TrafficConfig:
        if self.backend == "command" and self.command is None:
            raise ValueError("backend: command needs traffic.command.run, the command that applies the weights")
        return self


ROLLOUT_PROFILES: dict[str, dict[str, float]] = {
    # Flagger's and Argo Rollouts' defaults are a 1-minute analysis interval and steps of several intervals.
    "production": {"interval_s": 60.0, "bake_s": 300.0, "deadline_s": 1800.0},
    # Seconds, for tests and demos on loopback with generated load.
    "test": {"interval_s": 1.0, "bake_s": 4.0, "deadline_s": 30.0},
}


class RolloutMetricsConfig(_Model):
    """Where the rollout reads both model servers' metrics."""

    provider: Literal["scrape", "prometheus"] = Field(
        "scrape",
        description="`scrape`: read each server's /metrics at every analysis and take differences; `prometheus`: "
        "PromQL over `prometheus_url`, on the series Prometheus scrapes from the servers.",
    )
    prometheus_url: str | None = Field(None, description="Prometheus' base URL, for `provider: prometheus`.")
    scrape_interval_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="Prometheus' scrape interval (`provider: prometheus`); the analysis "
        "interval must be at least twice as long for rate() to see two samples.",
    )
    timeout_s: float = Field(5.0, gt=0, le=300, description="Longest wait for one read of one server's metrics.")
    max_failures: int = Field(
        3,
        ge=1,
        le=100,
        description="Reads in a row that may fail (a server or Prometheus not answering) before "
        "the step fails; fewer keep the step baking until its deadline.",
    )
    stable_url: str | None = Field(
        None,
        description="The stable server's base URL for `scrape` with `traffic.backend: command` (the nginx "
        "backend knows its servers).",
    )
    canary_url: str | None = Field(None, description="The canary server's base URL, as `stable_url`.")

    @model_validator(mode="after")
    def _prometheus_needs_its_url(self) -> RolloutMetricsConfig:
        if self.provider == "prometheus" and not self.prometheus_url:
            raise ValueError("provider: prometheus needs prometheus_url, e.g. http://127.0.0.1:9090")
        return self


class RolloutThresholdsConfig(_Model):
    """When the canary is judged harmful; see docs/rollout.md for each test."""

    # The analysis reads this model itself (mlgate.rollout.analysis.Thresholds), so each field's domain is checked
    # here, once (no NaN, no infinity: as every key of mlgate.yaml).

    max_error_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Ceiling of the canary's error rate (hard guard, binomial test): its own errors (5xx) over the "
        "requests it answered; client errors (4xx) are not held against it.",
    )
    max_p99_s: float = Field(1.0, gt=0, description="Budget of the canary's p99 latency in seconds (hard guard).")
    min_samples: int = Field(
        50, ge=1, description="Requests (and scores) each model must serve in a window before it can pass."
    )
    min_latency_quantile_samples: int = Field(
        1000, ge=1, description="Requests a side before the p99s are compared rather than the medians."
    )
    max_error_increase: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest tolerated rise of the error rate (5xx, as max_error_rate) over the stable model's.",
    )
    max_latency_ratio: float = Field(
        1.5, gt=1, description="Largest tolerated canary/stable latency ratio (medians; p99s with enough samples)."
    )
    max_psi: float = Field(0.2, gt=0, description="Largest tolerated PSI between the two models' score distributions.")
    max_ks: float = Field(
        0.15, gt=0, le=1, description="Largest tolerated KS distance between the score distributions."
    )
    max_disagreement: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Shadow step: largest tolerated share of paired rows the two models put on different sides of "
        "decision_threshold.",
    )
    max_score_diff: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Shadow step: largest tolerated mean absolute difference of the paired scores (in [0, 1]).",
    )
    decision_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Shadow step: the score, from 0 to 1, from which a row counts as positive, for the agreement.",
    )
    false_alarm_budget: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="Chance of rolling back a good canary over the whole rollout, spread over "
        "steps, analyses and tests (Bonferroni).",
    )


class RolloutConfig(_Model):
    """The staged canary of `mlgate rollout start`: the steps, how long each bakes, and what fails it."""

    profile: Literal["production", "test"] = Field(
        "production",
        description="Defaults of interval_s, bake_s and deadline_s: `production` 60/300/1800 s, `test` 1/4/30 s.",
    )
    steps: list[int] = Field(
        default_factory=lambda: [1, 5, 25, 100],
        min_length=1,
        description="The canary's share of the requests at each step, in percent: increasing, ending at 100.",
    )
    shadow: bool = Field(
        False,
        description="A shadow step first: nginx mirrors every request to the canary, whose answers are "
        "thrown away, and the pairs are judged before the canary answers anyone (nginx backend only).",
    )
    interval_s: float | None = Field(None, gt=0, description="Seconds between analyses; default from the profile.")
    bake_s: float | None = Field(
        None, gt=0, description="Seconds each step must pass its analyses before the next; default from the profile."
    )
    deadline_s: float | None = Field(
        None,
        gt=0,
        description="Longest a step may stay inconclusive (too few samples) before it fails; default from the profile.",
    )
    metrics: RolloutMetricsConfig = Field(default_factory=lambda: RolloutMetricsConfig())
    thresholds: RolloutThresholdsConfig = Field(default_factory=lambda: RolloutThresholdsConfig())
    state_dir: str = Field(
        ".mlgate/rollout",
        min_length=1,
        description="Folder of the rollout's state (state.json, the lock) and decision record, relative to the "
        "project root.",
    )

    def timing(self, key: str) -> float:
        """interval_s, bake_s or deadline_s: the value given, else the profile's."""
        given: float | None = getattr(self, key)
        return given if given is not None else ROLLOUT_PROFILES[self.profile][key]

    @model_validator(mode="after")
    def _steps_and_times_fit(self) -> RolloutConfig:
        steps = self.steps
        if any(not 1 <= step <= 100 for step in steps):
            raise ValueError(f"steps {steps}: each is the canary's percent, from 1 to 100")
        if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
            raise ValueError(f"steps {steps} must increase (e.g. [1, 5, 25, 100])")
        if steps[-1] != 100:
            raise ValueError(f"steps {steps} must end at 100: the last step sends every request to the canary")
        interval, bake, deadline = (self.timing(key) for key in ("interval_s", "bake_s", "deadline_s"))
        if bake < interval:
            raise ValueError(f"bake_s {bake:g} is shorter than interval_s {interval:g}: a step would end unanalysed")
        if deadline < bake:
            raise ValueError(f"deadline_s {deadline:g} is shorter than bake_s {bake:g}")
        if self.metrics.provider == "prometheus" and interval < 2 * self.metrics.scrape_interval_s:
            raise ValueError(
                f"interval_s {interval:g} is shorter than twice metrics.scrape_interval_s "
                f"{self.metrics.scrape_interval_s:g}: Prometheus would not have two samples per window"
            )
        return self


class MlgateConfig(_Model):
    """The whole `mlgate.yaml`."""

    version: Literal[1] = Field(1, description="Schema version of this file.")
    project: str = Field(description="The model project's name.")
    environment: EnvironmentConfig = Field(default_factory=lambda: EnvironmentConfig())
    lint: LintConfig = Field(default_factory=lambda: LintConfig())
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    train: TrainConfig | None = Field(None, description="The training gate; absent: no training.")
    model_tests: ModelTestsConfig | None = Field(None, description="The model-test gate; absent: none.")
    compress: CompressConfig | None = Field(
        None, description="The compress gate (needs model_tests: its holdout, score and checks); absent: none."
    )
    registry: RegistryConfig = Field(default_factory=lambda: RegistryConfig())
    serve: ServeConfig = Field(default_factory=lambda: ServeConfig())
    traffic: TrafficConfig = Field(default_factory=lambda: TrafficConfig())
    rollout: RolloutConfig = Field(default_factory=lambda: RolloutConfig())


@dataclass
class LoadedConfig:
    """A validated config, the file it came from, and the line of each key in it."""

    model: MlgateConfig
    path: Path
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The project root: relative paths in the config are relative to it."""
        return self.path.parent

    def line_of(self, *keys: str | int) -> int | None:
        """The line declaring `keys`, or of the nearest enclosing key that has one."""
        probe = tuple(keys)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return None


def _key_lines(node: yaml.Node, prefix: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            out[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = (*prefix, index)
            out[key] = item.start_mark.line + 1
            _key_lines(item, key, out)


def _format_location(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def read_config_document(config_path: Path) -> YamlDocument:
    """mlgate.yaml parsed safely, or a ConfigError that quotes nothing of the file.

    The file must be a regular UTF-8 file of at most MAX_CONFIG_BYTES inside its own folder (the
    project root) once symlinks are followed: a config symlinked to /etc/passwd is refused unread.
    """
    problem = kind_problem(config_path)
    if problem == "does not exist":
        raise ConfigError(
            f"{config_path}: config file not found",
            hint="create mlgate.yaml at the project root or pass its path with --config",
            file=str(config_path),
        )
    outside = outside_root(config_path.parent, config_path)
    if outside is not None:
        raise ConfigError(
            f"{config_path}: is a symlink to {outside}, outside the project folder {config_path.parent}",
            hint="put mlgate.yaml itself in the project (a copy, not a symlink leaving it); it was not read",
            file=str(config_path),
        )
    return load_yaml_file(
        config_path,
        ConfigError,
        max_bytes=MAX_CONFIG_BYTES,
        file_hint=f"point --config at mlgate.yaml: a regular UTF-8 text file of at most {MAX_CONFIG_BYTES} bytes",
    )


def load_config(path: str | Path = DEFAULT_CONFIG) -> LoadedConfig:
    """Read and validate `mlgate.yaml`; every problem is a ConfigError naming file, key and fix."""
    config_path = Path(path)
    document = read_config_document(config_path)
    raw, node = document.data, document.node
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{config_path}: expected a mapping of keys at the top level, got {type(raw).__name__}",
            hint="start the file with `version: 1` and `project: <name>`",
            file=str(config_path),
            line=1,
        )
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _key_lines(node, (), lines)
    try:
        model = MlgateConfig.model_validate(raw)
    except ValidationError as exc:
        loaded = LoadedConfig(model=MlgateConfig.model_construct(project=""), path=config_path, lines=lines)
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        # pydantic reports the alias (`validate`) for aliased fields; lines use the YAML key.
        line = loaded.line_of(*loc)
        key = _format_location(loc)
        problems = [f"{_format_location(tuple(e['loc']))}: {_excerpt(e['msg'])}" for e in exc.errors()]
        hint = _hint_for(first)
        raise ConfigError(
            f"{config_path}:{line or 1}: invalid key {_excerpt(key)}: {_excerpt(first['msg'])}"
            + (f" (and {len(problems) - 1} more: {'; '.join(problems[1:4])})" if len(problems) > 1 else ""),
            hint=hint,
            file=str(config_path),
            line=line or 1,
        ) from None
    loaded = LoadedConfig(model=model, path=config_path, lines=lines)
    _paths_stay_inside(loaded)
    return loaded


def _excerpt(text: str, limit: int = 160) -> str:
    """At most `limit` characters on one line: a message may echo a value, never a screenful of the file."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _paths_stay_inside(loaded: LoadedConfig) -> None:
    """Data paths that leave the project as written (absolute, `..`); symlinks are checked where files are read."""
    for name, source in loaded.model.data.sources.items():
        if source.allow_outside_project or not escapes_lexically(source.path):
            continue
        line = loaded.line_of("data", "sources", name, "path")
        raise ConfigError(
            f"{loaded.path}:{line or 1}: invalid key data.sources.{name}.path: {_excerpt(source.path, 80)!r} "
            "is outside the project (absolute, or climbing out with ..)",
            hint=f"give a path inside the project folder {loaded.root.resolve()}, relative to it, or set "
            f"data.sources.{name}.allow_outside_project: true to read it from there on purpose",
            file=str(loaded.path),
            line=line or 1,
        )
    for keys, relative in _project_paths(loaded.model):
        real = outside_root(loaded.root, loaded.root / relative)
        if real is None:
            continue
        key = _format_location(keys)
        line = loaded.line_of(*keys)
        how = "is" if escapes_lexically(relative) else f"resolves through a symlink to {real}, which is"
        raise ConfigError(
            f"{loaded.path}:{line or 1}: invalid key {key}: {_excerpt(relative, 80)!r} {how} outside the project "
            f"folder {loaded.root.resolve()}",
            hint=f"in {loaded.path.name}, set {key} to a path inside the project, relative to it; copy or move "
            "what it names into the project (a symlink leaving the project is not followed)",
            file=str(loaded.path),
            line=line or 1,
        )


def _project_paths(model: MlgateConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """The paths besides data sources that must stay in the project, with their keys: no opt-out for these."""
    found: list[tuple[tuple[str | int, ...], str]] = [
        (("lint", "paths", index), path) for index, path in enumerate(model.lint.paths)
    ]
    env = model.environment
    if env.constraints:
        found.append((("environment", "constraints"), env.constraints))
    for named in (pip_files, pip_local_paths, pip_file_urls):
        found += [(("environment", "install", index), path) for index, path in named(env.install)]
    if model.model_tests is not None:
        found += [(("model_tests", "tests", index), path) for index, path in enumerate(model.model_tests.tests)]
    return found


def _hint_for(error: Any) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "remove or rename the key; `mlgate schema` prints every allowed key"
    if kind == "literal_error":
        return f"use one of the allowed values: {error.get('ctx', {}).get('expected', '')}"
    if kind == "missing":
        return "add the required key; `mlgate schema` shows what it holds"
    return "correct the value; `mlgate schema` describes each key's type and range"


def json_schema() -> str:
    """The JSON Schema of mlgate.yaml, for editors (yaml-language-server) and `mlgate schema`."""
    schema = MlgateConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlgate.yaml"
    return json.dumps(schema, indent=2, sort_keys=True)
