"""A shadow step's pairs: each server's ring of recent answers (mlgate.serve.recent, `GET /mlgate/predictions`) and
the reader that joins the stable server's answer and the canary's mirror copy on the request id, over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from mlgate.metrics import MetricsError
from mlgate.rollout.pairs import PairReader
from mlgate.serve.recent import RecentPredictions


def test_the_ring_reads_on_from_a_cursor_and_says_what_it_dropped() -> None:
    ring = RecentPredictions(capacity=3)
    assert ring.since(0) == {"next": 0, "dropped": 0, "predictions": []}
    for n in range(5):
        ring.add(f"r{n}", mirrored=n % 2 == 1, status=200, scores=[n / 10])
    page = ring.since(0)
    assert [p["id"] for p in page["predictions"]] == ["r2", "r3", "r4"] and page["dropped"] == 2
    assert page["next"] == 5 and page["predictions"][1] == {
        "seq": 3, "id": "r3", "mirror": True, "status": 200, "scores": [0.3]
    }  # fmt: skip
    assert [p["id"] for p in ring.since(3, limit=1)["predictions"]] == ["r3"]
    assert ring.since(3, limit=1)["next"] == 4
    assert ring.since(5) == {"next": 5, "dropped": 0, "predictions": []}
    assert ring.since(99)["next"] == 5  # a cursor from before a restart: read on from the end


class Servers:
    """Two loopback HTTP servers, each answering /mlgate/predictions from its own ring (as `mlgate serve` does)."""

    def __init__(self) -> None:
        self.rings = {"stable": RecentPredictions(), "canary": RecentPredictions()}
        self.servers: dict[str, ThreadingHTTPServer] = {}
        for side, ring in self.rings.items():
            self.servers[side] = ThreadingHTTPServer(("127.0.0.1", 0), self.handler(ring))
            threading.Thread(target=self.servers[side].serve_forever, daemon=True).start()

    @staticmethod
    def handler(ring: RecentPredictions) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/mlgate/predictions":
                    self.send_error(404)
                    return
                query = {key: int(values[0]) for key, values in parse_qs(url.query).items()}
                body = json.dumps(ring.since(query.get("after", 0), query.get("limit", 5000))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        return Handler

    def url(self, side: str) -> str:
        return f"http://127.0.0.1:{self.servers[side].server_address[1]}"

    def answer(self, rid: str, stable: list[float] | None, canary: list[float] | None, status: int = 200) -> None:
        """One request: the stable server answers the client, the canary the mirror copy."""
        if stable is not None:
            self.rings["stable"].add(rid, mirrored=False, status=200, scores=stable)
        if canary is not None:
            self.rings["canary"].add(rid, mirrored=True, status=status, scores=canary)

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    found = Servers()
    try:
        yield found
    finally:
        found.close()


def test_answers_are_joined_on_the_request_id_from_the_steps_start_on(servers: Servers) -> None:
    servers.answer("before", [0.1], [0.1])  # before the step: not a pair of it
    reader = PairReader(servers.url("stable"), servers.url("canary"))
    reader.start()
    servers.answer("a", [0.2], [0.25])
    servers.answer("b", [0.4, 0.6], None)  # the canary's copy not answered yet
    servers.rings["canary"].add("c", mirrored=False, status=200, scores=[0.9])  # a client's request, not a copy
    servers.answer("d", [0.3], [0.3], status=500)  # the canary failed the copy: errors are not pairs
    sample = reader.read()
    assert (sample.stable, sample.canary) == ([0.2], [0.25])
    servers.answer("b", None, [0.5, 0.7])  # it comes in later, in a later read
    servers.answer("e", [0.1], [0.1, 0.2])  # rows that do not line up are counted, not compared
    sample = reader.read()
    assert (sample.stable, sample.canary) == ([0.2, 0.4, 0.6], [0.25, 0.5, 0.7])
    assert sample.unmatched_rows == 1 and sample.to_json() == {"pairs": 3, "unmatched_rows": 1, "dropped": 0}


def test_a_server_without_the_endpoint_or_down_is_a_metrics_failure(servers: Servers) -> None:
    reader = PairReader(servers.url("stable"), servers.url("canary") + "/elsewhere")
    with pytest.raises(MetricsError, match=r"canary server's /mlgate/predictions answered HTTP 404.*mlgate serve"):
        reader.start()
    port = servers.servers["canary"].server_address[1]
    servers.close()
    with pytest.raises(MetricsError, match=r"cannot read the stable server's recent predictions at .*"):
        PairReader(servers.url("stable"), f"http://127.0.0.1:{port}").read()
