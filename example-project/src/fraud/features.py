"""The columns of the fraud data set, one place for the generator, the model and the tests."""

from __future__ import annotations

from typing import Final

ID_COLUMNS: Final[tuple[str, ...]] = ("transaction_id", "user_id", "event_timestamp")
"""Identifiers and the event time: never model inputs, never compared for drift."""

NUMERIC_FEATURES: Final[tuple[str, ...]] = (
    "amount",
    "hour",
    "velocity_1h",
    "transaction_count_7d",
    "avg_amount_30d",
    "account_age_days",
)

CATEGORICAL_FEATURES: Final[tuple[str, ...]] = ("country", "device_type", "merchant_category")

LABEL: Final[str] = "is_fraud"

FEATURES: Final[tuple[str, ...]] = NUMERIC_FEATURES + CATEGORICAL_FEATURES

COLUMNS: Final[tuple[str, ...]] = (*ID_COLUMNS, *FEATURES, LABEL)
"""Every column of every CSV the generator writes, in file order."""

COUNTRIES: Final[tuple[str, ...]] = ("US", "GB", "DE", "FR", "IN", "BR", "NG")
DEVICE_TYPES: Final[tuple[str, ...]] = ("mobile", "desktop", "tablet")
MERCHANT_CATEGORIES: Final[tuple[str, ...]] = (
    "grocery",
    "electronics",
    "travel",
    "gaming",
    "fuel",
    "fashion",
)

CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "country": COUNTRIES,
    "device_type": DEVICE_TYPES,
    "merchant_category": MERCHANT_CATEGORIES,
}
"""The fixed vocabulary of each categorical feature."""
