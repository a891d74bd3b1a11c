"""The reseller endpoint against the edge's response timeout (Sanic's RESPONSE_TIMEOUT, set by
``SMM_RESPONSE_TIMEOUT_S``): an ``add`` fits its attempts in a budget that ends before it, and a
reseller call the timeout cuts off answers, in the protocol's shape, that its outcome is unknown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from core.config import Settings
from edge.reseller import CREATE_ORDER
from tests.fix_edge import silent_backend

pytestmark = pytest.mark.integration

TIMED_OUT = "Request timed out: it may still have taken effect, check your orders before sending it again"


def edge_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, Any]]:
    return [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records if r.name.startswith("edge.")]


async def test_an_add_tries_again_only_within_the_response_timeout_then_says_the_outcome_is_unknown(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Three attempts of 1 s (and the pauses between them) take 3.6 s, past a 2.5 s response
    # timeout: Sanic would cut the handler mid-retry. The attempts share a budget that ends 1 s
    # before it: the first gets its 1 s, the second what is left of 1.5 s, and none comes after.
    async with silent_backend(settings, reseller_add_timeout_s=1.0) as edge:
        edge.app.config.RESPONSE_TIMEOUT = 2.5
        call = edge.app.ctx.calls[CREATE_ORDER]
        deadlines: list[float] = []

        async def recorded(request: Any, **kwargs: Any) -> Any:  # the gRPC call's own signature
            deadlines.append(kwargs["timeout"])
            return await call(request, **kwargs)

        edge.app.ctx.calls[CREATE_ORDER] = recorded
        caplog.set_level(logging.INFO, logger="edge")
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=edge.base_url, timeout=10) as client:
            started = loop.time()
            response = await client.post(
                "/api/v1/reseller",
                data={
                    "key": "k" * 49,
                    "action": "add",
                    "service": "1",
                    "link": "https://x.com/a",
                    "quantity": "10",
                },
                headers={"X-Request-Id": "add-1"},
            )
            took = loop.time() - started
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.content == b'{"error":"' + TIMED_OUT.encode() + b'"}'
    assert len(deadlines) == 2, deadlines
    assert deadlines[0] == 1.0
    assert 0.2 < deadlines[1] < 0.5, deadlines
    assert took < 2.0, took
    # The edge stopped waiting, as on a response timeout: a warning, not an unhandled error.
    assert edge_records(caplog) == [
        (
            logging.WARNING,
            "reseller add: no answer after 2 attempts, the order may exist (request id add-1)",
            None,
        )
    ]


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/v1/reseller"), ("GET", "/api/v1/reseller/")])
async def test_a_response_timeout_on_the_reseller_path_says_the_outcome_is_unknown(
    settings: Settings, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    # A single cancel waits up to 60 s for CancelOrder; Sanic's RESPONSE_TIMEOUT cuts it first.
    # The cancel may have gone through: "Incorrect request" told the client its request was wrong.
    async with silent_backend(settings) as edge:
        edge.app.config.RESPONSE_TIMEOUT = 0.5
        caplog.set_level(logging.INFO, logger="edge")
        params = {"key": "k" * 49, "action": "cancel", "order": "5"}
        async with httpx.AsyncClient(base_url=edge.base_url, timeout=10) as client:
            if method == "POST":
                response = await client.post(path, data=params, headers={"X-Request-Id": "cut-1"})
            else:
                response = await client.get(path, params=params, headers={"X-Request-Id": "cut-1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["x-request-id"] == "cut-1"
    assert response.json() == {"error": TIMED_OUT}
    assert edge_records(caplog) == [
        (logging.WARNING, f"response timeout after 0.5 s: {method} {path} (request id cut-1)", None)
    ]


async def test_the_response_timeout_is_a_setting(settings: Settings) -> None:
    async with silent_backend(settings, response_timeout_s=0.5) as edge:
        assert edge.app.config.RESPONSE_TIMEOUT == 0.5
        async with httpx.AsyncClient(base_url=edge.base_url, timeout=10) as client:
            response = await client.get("/api/v1/public/categories")
    assert response.status_code == 504
    assert response.json()["error"]["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RESPONSE_TIMEOUT",
            "domain": "edge.smm",
            "metadata": {"timeout_s": "0.5"},
        }
    ]


def test_the_response_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="response_timeout_s"):
        Settings(response_timeout_s=0)
