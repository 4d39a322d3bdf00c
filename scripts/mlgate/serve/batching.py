"""Opportunistic batching: the rows of requests that arrive while the model is busy go to it in one call.

Each request is parsed on its own (its errors are its own), then its frame is queued. One thread takes
what is queued, up to `max_rows` rows, and calls the model once for all of it: per-call costs (MLflow's
schema enforcement, a framework's dispatch) are paid once per batch instead of once per request. It never
waits for a batch to fill: a request that finds the model idle is predicted at once, so a lone client
sees no added latency, and batches form only under concurrent load, where they raise throughput.

A request joins a batch only where that helps and cannot change its answer: a DataFrame of at most
SMALL_REQUEST_ROWS rows without params, whose columns and dtypes match the others', and a model output with
one row per input row to split back. A larger request is predicted alone, in the threadpool. If
the batch's call raises, each request is predicted alone, so one request's bad value fails that request
only and the error is counted against it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlgate.serve.payload import ModelError, PayloadError, predict

if TYPE_CHECKING:
    import pandas as pd

    from mlgate.serve.model import ServedModel

DEFAULT_MAX_ROWS = 256
# Larger requests already pay the per-call costs over many rows; they go to the model on their own, in
# parallel with the batches (tests/benchmarks/bench_serve.py: batching 100-row requests cut throughput).
SMALL_REQUEST_ROWS = 16


@dataclass
class _Pending:
    frame: pd.DataFrame
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    key: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (tuple(self.frame.columns), tuple(str(dtype) for dtype in self.frame.dtypes))

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        def set_it() -> None:
            if self.future.done():  # the request was cancelled (its client went away)
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(set_it)


class Batcher:
    """Predicts the frames of concurrent requests together, in one thread (started with the first request)."""

    def __init__(
        self, model: ServedModel, max_rows: int = DEFAULT_MAX_ROWS, observe: Callable[[int], None] | None = None
    ) -> None:
        self.model = model
        self.max_rows = max_rows
        self.observe = observe  # rows per model call, for the metrics
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    @staticmethod
    def accepts(data: Any, params: dict[str, Any] | None) -> bool:
        import pandas as pd

        if params is not None or not isinstance(data, pd.DataFrame):
            return False
        return 0 < len(data) <= SMALL_REQUEST_ROWS

    async def predict(self, frame: pd.DataFrame) -> Any:
        """The model's output for `frame` alone, predicted with whatever else is queued."""
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        pending = _Pending(frame, loop, loop.create_future())
        self._queue.put(pending)
        return await pending.future

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start:
            if self._thread is None:
                # A daemon: shutdown waits for the requests in flight (uvicorn), not for an idle queue.
                self._thread = threading.Thread(target=self._run, name="mlgate-serve-batch", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            rows = len(batch[0].frame)
            held: list[_Pending] = []
            while rows < self.max_rows:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending.key != batch[0].key or rows + len(pending.frame) > self.max_rows:
                    held.append(pending)  # another shape, or too many rows: the next call's
                    break
                batch.append(pending)
                rows += len(pending.frame)
            self._call(batch)
            for pending in held:
                self._call([pending])

    def _call(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            self._alone(batch[0])
            return
        import pandas as pd

        sizes = [len(pending.frame) for pending in batch]
        try:
            output = predict(self.model, pd.concat([p.frame for p in batch], ignore_index=True), None)
            parts = split(output, sizes)
        except (ModelError, PayloadError):
            parts = None
        if parts is None:  # the batch failed, or its output cannot be split by row: each on its own
            for pending in batch:
                self._alone(pending)
            return
        self._observe(sum(sizes))
        for pending, part in zip(batch, parts, strict=True):
            pending.settle(part)

    def _alone(self, pending: _Pending) -> None:
        try:
            output = predict(self.model, pending.frame, None)
        except Exception as exc:  # PayloadError and ModelError, the request's answer; anything else a 500 too
            pending.settle(error=exc)
            return
        self._observe(len(pending.frame))
        pending.settle(output)

    def _observe(self, rows: int) -> None:
        if self.observe is not None:
            self.observe(rows)


def split(output: Any, sizes: list[int]) -> list[Any] | None:
    """`output` cut into consecutive parts of `sizes` rows; None when it has not one row per input row."""
    import numpy as np
    import pandas as pd

    total = sum(sizes)
    bounds: list[tuple[int, int]] = []
    start = 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    if isinstance(output, pd.DataFrame | pd.Series):
        if len(output) != total:
            return None
        return [output.iloc[a:b].reset_index(drop=True) for a, b in bounds]
    if isinstance(output, np.ndarray):
        if output.ndim == 0 or output.shape[0] != total:
            return None
        return [output[a:b] for a, b in bounds]
    if isinstance(output, list):
        if len(output) != total:
            return None
        return [output[a:b] for a, b in bounds]
    return None  # a dict of arrays, a scalar, an object: what each row gets is not known
