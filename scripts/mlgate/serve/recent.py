"""The server's recent predictions by request id, for a shadow step's paired comparison (`GET /mlgate/predictions`).

In a shadow step nginx sends each request to the stable server and a copy (marked `X-Mlgate-Mirror: 1`) to the
canary, both with the same `X-Request-ID`. Each server keeps its last `capacity` answers here: sequence number,
request id, whether it was a mirror copy, the status and the scores. The rollout controller reads both servers
from a cursor (`after`) and joins the two answers to the same request (mlgate.rollout.pairs). Bounded: the
oldest answers go first; one uvicorn worker's own answers (with `--workers N` each worker keeps its own).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import Any

CAPACITY = 50_000  # answers kept (a few MB): minutes of traffic at the rates one server takes
PAGE = 5_000  # answers one read returns at most


class RecentPredictions:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._entries: deque[tuple[int, str, bool, int, list[float] | None]] = deque(maxlen=capacity)
        self._next = 0
        self._lock = threading.Lock()

    def add(self, request_id: str, mirrored: bool, status: int, scores: list[float] | None) -> None:
        with self._lock:
            self._entries.append((self._next, request_id, mirrored, status, scores))
            self._next += 1

    def since(self, after: int, limit: int = PAGE) -> dict[str, Any]:
        """The answers numbered `after` and later (at most `limit`), and the cursor to read on from. `dropped` counts
        those no longer kept (the reader fell behind by more than the capacity)."""
        with self._lock:
            first = self._entries[0][0] if self._entries else self._next
            skip = max(after, first) - first
            chosen = list(itertools.islice(self._entries, skip, skip + max(1, limit)))
            # Nothing new: read on from the end (also when `after` came from a server that has restarted since).
            following = chosen[-1][0] + 1 if chosen else self._next
        return {
            "next": following,
            "dropped": max(0, first - after),
            "predictions": [
                {"seq": seq, "id": rid, "mirror": mirrored, "status": status, "scores": scores}
                for seq, rid, mirrored, status, scores in chosen
            ],
        }
