"""Load for the release's canary when no real traffic reaches the servers (CI, demos): single transactions
to nginx's /invocations, in MLflow's `dataframe_records` format, at a bounded rate.

Run by the release workflow (`canary-load`), headless and bounded in users and time:
    locust -f load/locustfile.py --headless -u 4 -r 4 --run-time 5m --host "$MLGATE_TRAFFIC_URL"
Standard library only: it runs in mlgate's venv, not the project's. The rows follow the shape of
fraud.features (the model's signature), not its distributions: both models see the same population,
which is all the canary's comparison needs.
"""

from __future__ import annotations

import random

from locust import between
from locust.contrib.fasthttp import FastHttpUser
from locust.user.task import task

COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "NG")
DEVICE_TYPES = ("mobile", "desktop", "tablet")
MERCHANT_CATEGORIES = ("grocery", "electronics", "travel", "gaming", "fuel", "fashion")


def transaction(rng: random.Random) -> dict[str, object]:
    return {
        "amount": round(rng.lognormvariate(3.5, 1.2), 2),
        "hour": rng.randint(0, 23),
        "velocity_1h": rng.randint(0, 6),
        "transaction_count_7d": rng.randint(0, 40),
        "avg_amount_30d": round(rng.lognormvariate(3.5, 0.8), 2),
        "account_age_days": rng.randint(1, 3650),
        "country": rng.choice(COUNTRIES),
        "device_type": rng.choice(DEVICE_TYPES),
        "merchant_category": rng.choice(MERCHANT_CATEGORIES),
    }


class Client(FastHttpUser):  # type: ignore[misc]
    wait_time = between(0.01, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def score(self) -> None:
        self.client.post("/invocations", json={"dataframe_records": [transaction(self.rng)]})
