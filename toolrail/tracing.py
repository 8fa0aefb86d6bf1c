"""LangSmith tracing that can never slow or break a run.

With tracing on and its endpoint down, the LangSmith client retries uploads and flushes at
exit, which costs a run seconds and floods stderr. So before a run toolrail checks, with a
short connect timeout, that the endpoint answers; if it does not, tracing is switched off for
this process with one line saying so. Runs are traced with run names and metadata (tool, call
id, speculative, attempt) set by the nodes and the executor.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "https://api.smith.langchain.com"
_FLAGS = ("LANGSMITH_TRACING", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING")


def tracing_requested() -> bool:
    return any(os.environ.get(flag, "").strip().lower() in ("1", "true", "yes") for flag in _FLAGS)


def endpoint() -> str:
    return os.environ.get("LANGSMITH_ENDPOINT") or os.environ.get("LANGCHAIN_ENDPOINT") or DEFAULT_ENDPOINT


def reachable(url: str, timeout: float = 1.5) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def guard_tracing() -> bool:
    """Keep tracing only if its endpoint answers; returns whether tracing stays on."""
    if not tracing_requested():
        return False
    url = endpoint()
    if reachable(url):
        return True
    for flag in _FLAGS:
        os.environ[flag] = "false"
    sys.stderr.write(f"toolrail: LangSmith endpoint {url} is unreachable; tracing is off for this run\n")
    return False
