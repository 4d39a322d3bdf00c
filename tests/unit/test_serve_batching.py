"""`mlgate serve`'s opportunistic batching: concurrent requests share a model call, each gets its own rows back,
and a failure in a shared call is each request's own again."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from mlgate.serve.batching import SMALL_REQUEST_ROWS, Batcher, split
from mlgate.serve.model import ServedModel
from mlgate.serve.payload import ModelError, jsonable


class Model:
    """Scores `amount / 100`; the first call blocks until released, so the requests behind it queue up.

    `poison` is an amount it raises on; `output` picks what it returns: "frame", "series", "array", "list",
    or "total" (one number for the whole input: not one row per row).
    """

    def __init__(self, output: str = "frame", poison: float | None = None) -> None:
        self.required: list[str] = []  # no signature: check_columns has nothing to ask for
        self.output = output
        self.poison = poison
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        if not self.calls:
            self.entered.set()
            self.release.wait(timeout=10)
        self.calls.append(len(data))
        if self.poison is not None and (data["amount"] == self.poison).any():
            raise ValueError(f"cannot score an amount of {self.poison}")
        score = data["amount"].to_numpy() / 100.0
        if self.output == "frame":
            return pd.DataFrame({"score": score}, index=data.index + 1000)  # an index of its own: not the input's
        if self.output == "series":
            return pd.Series(score)
        if self.output == "array":
            return score
        if self.output == "list":
            return score.tolist()
        return float(score.sum())


def frames(count: int, rows: int = 2) -> list[pd.DataFrame]:
    return [pd.DataFrame({"amount": [float(10 * i + j) for j in range(rows)]}) for i in range(count)]


def run_concurrently(model: Model, inputs: list[pd.DataFrame], max_rows: int = 512) -> tuple[list[Any], list[int]]:
    """Each input predicted through one Batcher by its own task; (answers or exceptions, rows per model call)."""
    observed: list[int] = []
    batcher = Batcher(cast(ServedModel, model), max_rows, observe=observed.append)

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.predict(inputs[0]))]
        for _ in range(1000):  # the first request in the model (bounded)
            if model.entered.is_set():
                break
            await asyncio.sleep(0.01)
        tasks += [asyncio.ensure_future(batcher.predict(frame)) for frame in inputs[1:]]
        await asyncio.sleep(0.2)  # every other request queued behind it
        model.release.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    return asyncio.run(main()), observed


def scores_of(answer: Any) -> list[float]:
    if isinstance(answer, pd.DataFrame):
        return [float(v) for v in answer["score"]]
    return [float(v) for v in np.asarray(answer)]


@pytest.mark.parametrize("output", ["frame", "series", "array", "list"])
def test_queued_requests_share_one_call_and_each_gets_its_own_rows(output: str) -> None:
    model = Model(output)
    inputs = frames(6)
    answers, observed = run_concurrently(model, inputs)
    assert model.calls == [2, 10]  # the first alone (the model was idle), the five queued behind it in one call
    assert observed == model.calls
    for frame, answer in zip(inputs, answers, strict=True):
        assert scores_of(answer) == pytest.approx(list(frame["amount"] / 100.0))
    alone = Model(output)
    alone.calls.append(0)  # not blocked
    for frame, answer in zip(inputs, answers, strict=True):  # the body a client reads, as without batching
        assert jsonable(answer) == jsonable(alone.predict(frame))


def test_a_batch_holds_no_more_rows_than_allowed() -> None:
    model = Model()
    answers, _ = run_concurrently(model, frames(7), max_rows=4)
    assert model.calls == [2, 4, 4, 4]
    assert all(not isinstance(answer, BaseException) for answer in answers)


def test_frames_of_another_shape_are_not_mixed() -> None:
    model = Model()
    inputs = frames(4)
    inputs[3] = inputs[3].assign(extra=1)  # another column: its own call
    answers, _ = run_concurrently(model, inputs)
    assert model.calls == [2, 4, 2]
    assert all(not isinstance(answer, BaseException) for answer in answers)


def test_a_request_that_breaks_the_shared_call_fails_alone() -> None:
    inputs = frames(5)
    model = Model(poison=float(inputs[3]["amount"][0]))
    answers, observed = run_concurrently(model, inputs)
    assert isinstance(answers[3], ModelError) and "cannot score an amount of 30.0" in str(answers[3])
    for index in (0, 1, 2, 4):
        assert scores_of(answers[index]) == pytest.approx(list(inputs[index]["amount"] / 100.0))
    assert model.calls == [2, 8, 2, 2, 2, 2]  # the shared call was tried, then each request on its own
    assert observed == [2, 2, 2, 2]  # the calls that answered, the failed request's not among them


def test_an_output_without_a_row_per_row_is_predicted_request_by_request() -> None:
    model = Model("total")
    inputs = frames(4)
    answers, _ = run_concurrently(model, inputs)
    assert model.calls == [2, 6, 2, 2, 2]
    assert answers == pytest.approx([float(frame["amount"].sum() / 100.0) for frame in inputs])


def test_a_lone_request_is_not_held_back() -> None:
    model = Model()
    model.release.set()
    batcher = Batcher(cast(ServedModel, model))
    started = time.perf_counter()
    answer = asyncio.run(batcher.predict(frames(1)[0]))
    assert scores_of(answer) == [0.0, 0.01]
    assert model.calls == [2]
    assert time.perf_counter() - started < 5  # no wait for a batch to fill (a generous bound, not a timing)


def test_split_refuses_what_it_cannot_cut_by_row() -> None:
    assert split(np.arange(6), [2, 4]) is not None
    assert split(np.arange(5), [2, 4]) is None
    assert split(np.float64(3.0), [1, 1]) is None
    assert split({"a": [1, 2]}, [1, 1]) is None
    assert split(pd.DataFrame({"x": range(3)}), [1, 1]) is None


def test_accepts_only_frames_without_params() -> None:
    frame = frames(1)[0]
    assert Batcher.accepts(frame, None)
    assert not Batcher.accepts(frame, {"threshold": 0.5})
    assert not Batcher.accepts(frame.head(0), None)
    assert not Batcher.accepts(np.ones((2, 2)), None)
    assert Batcher.accepts(frames(1, rows=SMALL_REQUEST_ROWS)[0], None)
    assert not Batcher.accepts(frames(1, rows=SMALL_REQUEST_ROWS + 1)[0], None)  # large: predicted alone
