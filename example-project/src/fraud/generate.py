"""Deterministic synthetic card transactions with a known fraud relation.

    PYTHONPATH=src python -m fraud.generate --params params.yaml --out data
    PYTHONPATH=src python -m fraud.generate --calibrate      # print the b0 that hits target_rate

Writes four CSV files with byte-identical content on every run (same seed, same numpy):

- ``train.csv`` / ``test.csv``: ``n_rows`` transactions split by time, the latest
  ``test_fraction`` of them being the test set;
- ``reference.csv``: a separate draw of the same distribution from an earlier month;
- ``production.csv``: a later batch with the drift of ``params.yaml`` (larger amounts,
  another country and device mix); the fraud relation itself is unchanged.

The label follows a logistic model stated in ``params.yaml`` (see `fraud_logit`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml

from fraud.features import COLUMNS, COUNTRIES, DEVICE_TYPES, MERCHANT_CATEGORIES

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Relative share of transactions in each hour of the day (quiet nights, busy evenings).
HOUR_WEIGHTS: tuple[float, ...] = (
    1.0, 0.7, 0.5, 0.4, 0.4, 0.6, 1.2, 2.2, 3.2, 3.8, 4.0, 4.2,
    4.6, 4.5, 4.2, 4.1, 4.3, 4.8, 5.2, 5.4, 5.0, 4.0, 2.8, 1.8,
)  # fmt: skip
NIGHT_LAST_HOUR = 5  # hours 0..5 count as night in the fraud relation
YOUNG_ACCOUNT_DAYS = 30  # accounts younger than this count as young
FLOAT_FORMAT = "%.2f"  # money columns: cents; fixed formatting keeps the bytes stable
OUTPUT_FILES = ("train.csv", "test.csv", "reference.csv", "production.csv")


@dataclass(frozen=True)
class FraudRelation:
    """logit(P(fraud)) = b0 + b_amount*log1p(amount) + b_velocity*velocity_1h + small terms."""

    target_rate: float
    b0: float
    b_amount: float
    b_velocity: float
    b_young_account: float
    b_night: float


@dataclass(frozen=True)
class Population:
    """The feature distribution of one draw."""

    amount_log_mean: float
    amount_log_sigma: float
    merchant_amount_multiplier: dict[str, float]
    velocity_mean: float
    count_7d_mean: float
    account_age_mean_days: float
    country_weights: dict[str, float]
    device_weights: dict[str, float]
    merchant_weights: dict[str, float]
    amount_scale: float = 1.0


@dataclass(frozen=True)
class Window:
    """When the transactions of one draw happen, and the first transaction id."""

    start: str
    days: int
    id_offset: int


@dataclass(frozen=True)
class Params:
    seed: int
    n_rows: int
    test_fraction: float
    reference_rows: int
    production_rows: int
    n_users: int
    device_null_rate: float
    max_account_age_days: int
    fraud: FraudRelation
    population: Population
    drifted: Population
    windows: dict[str, Window]


def _weights(raw: Mapping[str, Any], vocabulary: tuple[str, ...], name: str) -> dict[str, float]:
    unknown = set(raw) - set(vocabulary)
    missing = set(vocabulary) - set(raw)
    if unknown or missing:
        raise ValueError(
            f"{name}: expected weights for exactly {list(vocabulary)}; "
            f"unknown {sorted(unknown)}, missing {sorted(missing)}"
        )
    return {key: float(raw[key]) for key in vocabulary}


def load_params(path: str | Path) -> Params:
    """Read the `generate` section of params.yaml."""
    with open(path, encoding="utf-8") as handle:
        raw: dict[str, Any] = yaml.safe_load(handle)["generate"]
    pop: dict[str, Any] = raw["population"]
    drift: dict[str, Any] = raw["drift"]
    population = Population(
        amount_log_mean=float(pop["amount_log_mean"]),
        amount_log_sigma=float(pop["amount_log_sigma"]),
        merchant_amount_multiplier=_weights(
            pop["merchant_amount_multiplier"], MERCHANT_CATEGORIES, "population.merchant_amount_multiplier"
        ),
        velocity_mean=float(pop["velocity_mean"]),
        count_7d_mean=float(pop["count_7d_mean"]),
        account_age_mean_days=float(pop["account_age_mean_days"]),
        country_weights=_weights(pop["country_weights"], COUNTRIES, "population.country_weights"),
        device_weights=_weights(pop["device_weights"], DEVICE_TYPES, "population.device_weights"),
        merchant_weights=_weights(
            pop["merchant_weights"], MERCHANT_CATEGORIES, "population.merchant_weights"
        ),
    )
    drifted = Population(
        **{
            **population.__dict__,
            "amount_scale": float(drift["amount_scale"]),
            "country_weights": _weights(drift["country_weights"], COUNTRIES, "drift.country_weights"),
            "device_weights": _weights(drift["device_weights"], DEVICE_TYPES, "drift.device_weights"),
        }
    )
    fraud: dict[str, Any] = raw["fraud"]
    return Params(
        seed=int(raw["seed"]),
        n_rows=int(raw["n_rows"]),
        test_fraction=float(raw["test_fraction"]),
        reference_rows=int(raw["reference_rows"]),
        production_rows=int(raw["production_rows"]),
        n_users=int(raw["n_users"]),
        device_null_rate=float(raw["device_null_rate"]),
        max_account_age_days=int(raw["max_account_age_days"]),
        fraud=FraudRelation(**{key: float(value) for key, value in fraud.items()}),
        population=population,
        drifted=drifted,
        windows={
            name: Window(start=str(w["start"]), days=int(w["days"]), id_offset=int(w["id_offset"]))
            for name, w in raw["windows"].items()
        },
    )


def fraud_logit(frame: pd.DataFrame, relation: FraudRelation) -> FloatArray:
    """The log-odds of fraud of each row: the ground truth the labels are drawn from."""
    amount = frame["amount"].to_numpy(dtype=np.float64)
    velocity = frame["velocity_1h"].to_numpy(dtype=np.float64)
    young = (frame["account_age_days"].to_numpy() < YOUNG_ACCOUNT_DAYS).astype(np.float64)
    night = (frame["hour"].to_numpy() <= NIGHT_LAST_HOUR).astype(np.float64)
    logit: FloatArray = (
        relation.b0
        + relation.b_amount * np.log1p(amount)
        + relation.b_velocity * velocity
        + relation.b_young_account * young
        + relation.b_night * night
    )
    return logit


def fraud_probability(frame: pd.DataFrame, relation: FraudRelation) -> FloatArray:
    probability: FloatArray = 1.0 / (1.0 + np.exp(-fraud_logit(frame, relation)))
    return probability


def _choice(rng: np.random.Generator, weights: dict[str, float], n: int) -> npt.NDArray[np.object_]:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    index = rng.choice(len(keys), size=n, p=p / p.sum())
    return np.array(keys, dtype=object)[index]


def draw_features(
    rng: np.random.Generator, n: int, population: Population, window: Window, params: Params
) -> pd.DataFrame:
    """Draw `n` transactions (every column but the label), sorted by event time."""
    hour_p = np.array(HOUR_WEIGHTS) / sum(HOUR_WEIGHTS)
    hour: IntArray = rng.choice(24, size=n, p=hour_p).astype(np.int64)
    day = rng.integers(0, window.days, size=n)
    second_in_hour = rng.integers(0, 3600, size=n)
    offset_s = day * 86_400 + hour * 3_600 + second_in_hour
    order = np.argsort(offset_s, kind="stable")

    user_id = rng.integers(1, params.n_users + 1, size=n)
    country = _choice(rng, population.country_weights, n)
    device = _choice(rng, population.device_weights, n)
    merchant = _choice(rng, population.merchant_weights, n)
    multiplier = np.array([population.merchant_amount_multiplier[m] for m in merchant], dtype=np.float64)
    log_amount = population.amount_log_mean + np.log(multiplier)
    noise = rng.normal(0.0, population.amount_log_sigma, size=n)
    amount = np.round(np.exp(log_amount + noise) * population.amount_scale, 2)
    # The user's usual spend: correlated with the (undrifted) amount, never scaled by the drift.
    avg_noise = rng.normal(0.0, 0.5, size=n)
    avg_amount_30d = np.round(np.exp(population.amount_log_mean + 0.4 + 0.5 * noise + avg_noise), 2)
    velocity = rng.poisson(population.velocity_mean, size=n).astype(np.int64)
    shape = 3.0
    count_7d = velocity + rng.negative_binomial(shape, shape / (shape + population.count_7d_mean), size=n)
    age = np.floor(rng.exponential(population.account_age_mean_days, size=n)).astype(np.int64)
    age = np.minimum(age, params.max_account_age_days)
    missing_device = rng.random(size=n) < params.device_null_rate
    device[missing_device] = None

    start = np.datetime64(window.start, "s")
    timestamps = np.datetime_as_string(start + offset_s[order].astype("timedelta64[s]"), unit="s")
    columns: dict[str, Any] = {
        "transaction_id": window.id_offset + np.arange(1, n + 1, dtype=np.int64),
        "user_id": user_id[order].astype(np.int64),
        "event_timestamp": timestamps.astype(object),
        "amount": amount[order],
        "hour": hour[order],
        "velocity_1h": velocity[order],
        "transaction_count_7d": count_7d[order].astype(np.int64),
        "avg_amount_30d": avg_amount_30d[order],
        "account_age_days": age[order],
        "country": country[order],
        "device_type": device[order],
        "merchant_category": merchant[order],
    }
    return pd.DataFrame(columns)


def add_labels(rng: np.random.Generator, frame: pd.DataFrame, relation: FraudRelation) -> pd.DataFrame:
    probability = fraud_probability(frame, relation)
    labelled = frame.copy()
    labelled["is_fraud"] = (rng.random(size=len(frame)) < probability).astype(np.int64)
    return labelled[list(COLUMNS)]


def _streams(seed: int) -> dict[str, np.random.Generator]:
    # One independent stream per draw: changing the size of one draw leaves the others as they were.
    children = np.random.SeedSequence(seed).spawn(3)
    return {
        name: np.random.default_rng(child)
        for name, child in zip(("main", "reference", "production"), children, strict=True)
    }


def generate(params: Params) -> dict[str, pd.DataFrame]:
    """All four data sets, keyed by file name."""
    rngs = _streams(params.seed)
    main = add_labels(
        rngs["main"],
        draw_features(rngs["main"], params.n_rows, params.population, params.windows["main"], params),
        params.fraud,
    )
    n_test = round(params.n_rows * params.test_fraction)
    reference = add_labels(
        rngs["reference"],
        draw_features(
            rngs["reference"], params.reference_rows, params.population, params.windows["reference"], params
        ),
        params.fraud,
    )
    production = add_labels(
        rngs["production"],
        draw_features(
            rngs["production"], params.production_rows, params.drifted, params.windows["production"], params
        ),
        params.fraud,
    )
    return {
        "train.csv": main.iloc[: params.n_rows - n_test].reset_index(drop=True),
        "test.csv": main.iloc[params.n_rows - n_test :].reset_index(drop=True),
        "reference.csv": reference,
        "production.csv": production,
    }


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n", encoding="utf-8")


def calibrate_b0(params: Params) -> float:
    """The b0 at which the expected positive rate of the main draw equals target_rate."""
    rng = _streams(params.seed)["main"]
    frame = draw_features(rng, params.n_rows, params.population, params.windows["main"], params)
    low, high = -30.0, 10.0
    for _ in range(100):
        middle = (low + high) / 2
        relation = FraudRelation(**{**params.fraud.__dict__, "b0": middle})
        if float(fraud_probability(frame, relation).mean()) < params.fraud.target_rate:
            low = middle
        else:
            high = middle
    return round((low + high) / 2, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraud.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--out", default="data", help="output folder (default: data)")
    parser.add_argument("--calibrate", action="store_true", help="print the b0 that hits target_rate")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.calibrate:
        print(f"b0: {calibrate_b0(params)}  # expected positive rate {params.fraud.target_rate}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in generate(params).items():
        write_csv(frame, out / name)
        rate = frame["is_fraud"].mean()
        print(f"{out / name}: {len(frame)} rows, positive rate {rate:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
