"""Rows shared by two sources (train and test, say), found by a key column."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

EXAMPLES = 5


@dataclass(frozen=True)
class LeakageResult:
    """Keys of `left` that also appear in `right`."""

    key: str
    left: str
    right: str
    overlapping: int
    examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.overlapping == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "between": [self.left, self.right],
            "overlapping": self.overlapping,
            "examples": self.examples,
            "passed": self.passed,
        }


def find_leakage(key: str, left: str, left_keys: pd.Series, right: str, right_keys: pd.Series) -> LeakageResult:
    """Count distinct non-null keys present in both; `left_keys`/`right_keys` are the key columns."""
    left_index = pd.Index(left_keys.dropna().unique())
    right_index = pd.Index(right_keys.dropna().unique())
    if left_index.dtype != right_index.dtype:
        # A key read as int in one file and as text in the other must still match.
        left_index, right_index = left_index.astype(str), right_index.astype(str)
    shared = left_index.intersection(right_index)
    examples = [str(v) for v in shared[:EXAMPLES]]
    return LeakageResult(key=key, left=left, right=right, overlapping=len(shared), examples=examples)
