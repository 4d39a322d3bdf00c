"""The generator behind the committed CSV files: deterministic, disjoint ids, the stated relation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from churn.data import FEATURES, ID, LABEL, SPLITS, generate

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_committed_files_are_what_the_generator_makes(name: str) -> None:
    seed, rows, first_id = SPLITS[name]
    expected = generate(seed, rows, first_id)
    committed = pd.read_csv(DATA / f"{name}.csv")
    pd.testing.assert_frame_equal(committed, expected, check_dtype=False)


def test_ids_are_disjoint_between_train_and_test() -> None:
    train, test = generate(*SPLITS["train"]), generate(*SPLITS["test"])
    assert set(train[ID]).isdisjoint(test[ID])
    assert list(train.columns) == [ID, *FEATURES, LABEL]


def test_support_calls_raise_churn() -> None:
    frame = generate(1, 20000, 1)
    rate = frame.groupby(frame["support_calls_90d"] >= 3)[LABEL].mean()
    assert rate[True] > rate[False] + 0.1
