"""The columns of the churn data and a deterministic generator of it.

    python -m churn.data [--out data]

writes data/train.csv, data/test.csv and data/reference.csv, the files committed to git. The
churn relation is known (`churn_logit`), so the model tests can state what must hold: more support
calls and a month-to-month contract raise the risk, the region plays no part.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ID = "customer_id"
LABEL = "churned"
NUMERIC = ["tenure_months", "monthly_charges", "support_calls_90d"]
CATEGORICAL = ["contract", "payment_method", "region"]
FEATURES = NUMERIC + CATEGORICAL

CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENTS = ["card", "bank", "invoice"]
REGIONS = ["north", "south", "east", "west"]

# (seed, rows, first customer_id) of each file: disjoint ids, so train and test cannot leak.
SPLITS = {"train": (11, 6000, 1), "test": (12, 2000, 100_001), "reference": (13, 6000, 200_001)}


def churn_logit(frame: pd.DataFrame) -> np.ndarray:
    """The true log-odds of churn; region and payment method play no part."""
    contract = frame["contract"].to_numpy()
    return np.asarray(
        -1.0
        - 0.04 * frame["tenure_months"].to_numpy()
        + 0.015 * (frame["monthly_charges"].to_numpy() - 80.0)
        + 0.45 * frame["support_calls_90d"].to_numpy()
        + 1.2 * (contract == "month-to-month")
        - 0.9 * (contract == "two-year"),
        dtype=np.float64,
    )


def generate(seed: int, rows: int, first_id: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            ID: np.arange(first_id, first_id + rows, dtype=np.int64),
            "tenure_months": rng.integers(0, 121, size=rows),
            "monthly_charges": np.round(rng.uniform(15.0, 150.0, size=rows), 2),
            "support_calls_90d": np.minimum(rng.poisson(1.5, size=rows), 30),
            "contract": rng.choice(CONTRACTS, size=rows, p=[0.5, 0.3, 0.2]),
            "payment_method": rng.choice(PAYMENTS, size=rows),
            "region": rng.choice(REGIONS, size=rows),
        }
    )
    probability = 1.0 / (1.0 + np.exp(-churn_logit(frame)))
    frame[LABEL] = (rng.random(rows) < probability).astype(np.int64)
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (seed, rows, first_id) in SPLITS.items():
        generate(seed, rows, first_id).to_csv(args.out / f"{name}.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
