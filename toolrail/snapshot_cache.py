"""Decoded checkpoint snapshots, kept for the next turn of the thread.

The thread-long channels are LangGraph `DeltaChannel`s (toolrail/state.py): reading a thread's
state walks back to each channel's latest full snapshot, which sits in one checkpoint blob, and
decodes it. That blob holds the whole conversation, so decoding it (a Pydantic message object
per message) is the one part of a turn that grows with the thread: at 50 turns it was a fifth of
the turn's CPU time. Yet a snapshot blob never changes once written, and the next turns of the
thread read the very same one until the next snapshot (every few turns).

So the checkpointer's serializer gets a small cache in front of `loads_typed`: keyed by the
blob's exact bytes (nothing is ever served for different bytes, whichever worker wrote them),
only for large blobs, bounded by entries and bytes (least recently used goes first). Each read
gets its own copies of the decoded dicts and lists, so LangGraph may change them freely; the
message objects inside are shared, as they already are between a thread's steps.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any, Callable

MIN_BLOB_BYTES = 8 * 1024  # smaller blobs decode in microseconds: not worth a cache entry
MAX_ENTRIES = 32
MAX_CACHED_BYTES = 16 * 1024 * 1024


class SnapshotCache:
    """`loads_typed` with the large blobs' decoded values remembered (see the module's docstring)."""

    toolrail_snapshot_cache = True

    def __init__(self, loads_typed: Callable[[tuple[str, bytes]], Any], *, min_bytes: int = MIN_BLOB_BYTES,
                 max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_CACHED_BYTES):
        self._decode = loads_typed
        self.min_bytes, self.max_entries, self.max_bytes = min_bytes, max_entries, max_bytes
        self._entries: OrderedDict[tuple[str, bytes], Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # sync savers decode on worker threads
        self.hits = self.misses = 0

    def __call__(self, data: tuple[str, bytes]) -> Any:
        type_, blob = data
        if not isinstance(blob, (bytes, bytearray)) or len(blob) < self.min_bytes or len(blob) > self.max_bytes:
            return self._decode(data)
        key = (type_, bytes(blob))
        with self._lock:
            value = self._entries.get(key, _MISSING)
            if value is not _MISSING:
                self._entries.move_to_end(key)
                self.hits += 1
        if value is _MISSING:
            value = self._decode(data)
            with self._lock:
                self.misses += 1
                if key not in self._entries:
                    self._entries[key] = value
                    self._bytes += len(key[1])
                    while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                        (_, old), _ = self._entries.popitem(last=False)
                        self._bytes -= len(old)
        return _containers_copied(value)


def _containers_copied(value: Any, depth: int = 0) -> Any:
    """Fresh containers down to the lists a checkpoint holds (checkpoint -> channel_values ->
    snapshot -> its list), so LangGraph may change any of them; what the lists hold (messages,
    records) is shared, as LangGraph itself shares it between a thread's steps."""
    if depth > COPY_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _containers_copied(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_containers_copied(v, depth + 1) for v in value] if depth < COPY_DEPTH else value.copy()
    if isinstance(value, tuple):  # a snapshot is LangGraph's `_DeltaSnapshot` (a named tuple) around the list
        items = [_containers_copied(v, depth + 1) for v in value]
        return type(value)._make(items) if hasattr(type(value), "_make") else tuple(items)
    if isinstance(value, set):
        return set(value)
    return value


COPY_DEPTH = 3
_MISSING = object()


def cache_snapshots(checkpointer: Any) -> None:
    """Give `checkpointer`'s serializer a snapshot cache (once). The serializer is copied, not
    wrapped, so it stays the type LangGraph checks for (its msgpack allowlist makes a new one,
    which then simply has no cache)."""
    serde = getattr(checkpointer, "serde", None)
    loads_typed = getattr(serde, "loads_typed", None)
    if loads_typed is None or getattr(loads_typed, "toolrail_snapshot_cache", False):
        return
    try:
        cached = copy.copy(serde)
        cached.loads_typed = SnapshotCache(loads_typed)
        checkpointer.serde = cached
    except (AttributeError, TypeError):  # a serializer (or saver) that takes no new attributes: left as it is
        return
