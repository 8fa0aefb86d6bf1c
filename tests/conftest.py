"""Shared fixtures: a real OpenAI-compatible server on 127.0.0.1 and clients pointed at it."""

from __future__ import annotations

import os

import pytest
from langchain_openai import ChatOpenAI

from toolrail.testing.openai_server import OpenAICompatibleServer

# The real client must never wander off to a proxy or the real API during tests.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["no_proxy"] = os.environ["NO_PROXY"]

TRIP_PROMPT = "Plan a trip from SF to NYC. What's the weather there and find me flights."


@pytest.fixture
def openai_server():
    """Start a scripted server; tests add replies with `server.script(...)`."""
    with OpenAICompatibleServer() as server:
        yield server


def client_for(server: OpenAICompatibleServer, *, streaming: bool = True) -> ChatOpenAI:
    """The real ChatOpenAI client over HTTP; non-streaming mode sends `stream: false`."""
    return ChatOpenAI(
        model="scripted-model",
        base_url=server.base_url,
        api_key="test-key",
        max_retries=0,
        timeout=20,
        disable_streaming=not streaming,
    )


@pytest.fixture(params=["streaming", "non-streaming"])
def streaming(request) -> bool:
    return request.param == "streaming"
