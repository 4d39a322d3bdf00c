"""A shadow step's paired predictions: the stable server's answer and the canary's to the same request, joined on
the request id.

nginx gives every request an id (the client's `X-Request-ID`, else its own) and sends the same id with the copy it
mirrors to the canary; each `mlgate serve` keeps its recent answers by id (`GET /mlgate/predictions`,
mlgate.serve.recent). `PairReader` reads both servers from the step's start on and joins them: a canary answer is
paired with the stable server's answer to the same request, score by score. Answers the other side has not been
read for yet wait (bounded); an error on either side is not a pair (the error checks judge errors).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from mlgate.metrics import MetricsError

ENDPOINT = "/mlgate/predictions"
WAITING = 200_000  # answers kept unpaired at most, a side
PAGES = 20  # pages one read takes at most, a side (mlgate.serve.recent.PAGE answers each)
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class PairSample:
    """The pairs joined so far in this step: the stable and canary score of each, in the order they were joined."""

    stable: list[float] = field(default_factory=list)
    canary: list[float] = field(default_factory=list)
    unmatched_rows: int = 0  # pairs whose two answers had a different number of scores (not compared)
    dropped: int = 0  # answers the servers no longer kept when read (the reader fell behind)

    @property
    def count(self) -> int:
        return len(self.stable)

    def to_json(self) -> dict[str, Any]:
        return {"pairs": self.count, "unmatched_rows": self.unmatched_rows, "dropped": self.dropped}


class PairReader:
    """Reads the answers of the stable and canary servers (base URLs) since `start()` and joins them by request id."""

    def __init__(self, stable_url: str, canary_url: str, timeout_s: float = 5.0) -> None:
        self.urls = {"stable": stable_url.rstrip("/"), "canary": canary_url.rstrip("/")}
        self.timeout_s = timeout_s
        self.cursors = {"stable": 0, "canary": 0}
        self.waiting: dict[str, dict[str, list[float]]] = {"stable": {}, "canary": {}}
        self.sample = PairSample()

    def start(self) -> None:
        """Begin at what each server answers from now on (earlier answers belong to no shadow step)."""
        for side in self.urls:
            self.cursors[side] = int(self._page(side, after=2**62, limit=1)["next"])
        self.waiting = {"stable": {}, "canary": {}}
        self.sample = PairSample()

    def read(self) -> PairSample:
        """The pairs joined since `start()`, with whatever both servers answered since the last read."""
        for side in ("stable", "canary"):
            for _ in range(PAGES):
                page = self._page(side, after=self.cursors[side])
                self.cursors[side] = int(page["next"])
                self.sample.dropped += int(page.get("dropped") or 0)
                for answer in page["predictions"]:
                    self._take(side, answer)
                if not page["predictions"]:
                    break
        return self.sample

    def _take(self, side: str, answer: dict[str, Any]) -> None:
        # The stable server answers the clients; the canary answers only mirror copies in a shadow step.
        if answer.get("status") != 200 or answer.get("scores") is None:
            return
        if bool(answer.get("mirror")) != (side == "canary"):
            return
        rid, scores = str(answer["id"]), [float(value) for value in answer["scores"]]
        other = "canary" if side == "stable" else "stable"
        if rid in self.waiting[other]:
            theirs = self.waiting[other].pop(rid)
            stable, canary = (scores, theirs) if side == "stable" else (theirs, scores)
            if len(stable) != len(canary):
                self.sample.unmatched_rows += 1
                return
            self.sample.stable.extend(stable)
            self.sample.canary.extend(canary)
            return
        mine = self.waiting[side]
        if len(mine) >= WAITING:
            mine.pop(next(iter(mine)))  # the oldest: its partner is not coming
        mine[rid] = scores

    def _page(self, side: str, after: int, limit: int | None = None) -> dict[str, Any]:
        url = f"{self.urls[side]}{ENDPOINT}?after={after}" + (f"&limit={limit}" if limit else "")
        try:
            with _LOCAL.open(url, timeout=self.timeout_s) as answer:
                page = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            hint = " (is it `mlgate serve`? a shadow step pairs the answers it keeps)" if exc.code == 404 else ""
            raise MetricsError(f"the {side} server's {ENDPOINT} answered HTTP {exc.code}: {url}{hint}") from None
        except (OSError, ValueError) as exc:
            raise MetricsError(f"cannot read the {side} server's recent predictions at {url}: {exc}") from None
        if not isinstance(page, dict) or not isinstance(page.get("predictions"), list) or "next" not in page:
            raise MetricsError(f"the {side} server's {ENDPOINT} answered no page of predictions: {url}")
        return page
