"""A small MCP server (official MCP Python SDK) for the README example and the tests.

    python -m toolrail.testing.mcp_server                 # stdio
    python -m toolrail.testing.mcp_server --http 8765     # streamable HTTP at http://127.0.0.1:8765/mcp

Its tools use what real servers' schemas use: a nested model (`$ref`), a union (`anyOf`),
optional and defaulted fields, enums, annotations (read-only or not), structured output, an
image result and a tool that reports an error. Every call that reaches it is appended as one
JSON line to the file named by `TOOLRAIL_MCP_DEMO_LOG`, so tests can see what arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
from typing import Literal

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

server = MCPServer("library")

BOOKS = [
    {"title": "Dune", "author": "Frank Herbert", "year": 1965, "genre": "sf"},
    {"title": "Neuromancer", "author": "William Gibson", "year": 1984, "genre": "sf"},
    {"title": "Emma", "author": "Jane Austen", "year": 1815, "genre": "novel"},
]
# A 1x1 PNG: enough to prove that image content comes back.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _log(tool: str, arguments: dict) -> None:
    path = os.environ.get("TOOLRAIL_MCP_DEMO_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


class Filters(BaseModel):
    genre: Literal["sf", "novel"] | None = None
    after_year: int | None = Field(default=None, ge=0)


class Book(BaseModel):
    title: str
    author: str
    year: int


class Found(BaseModel):
    books: list[Book]


class Note(BaseModel):
    book: str = Field(min_length=1)
    text: str
    rating: int | Literal["unrated"] = "unrated"
    tags: list[str] = []


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def find_books(query: str, filters: Filters | None = None, limit: int = 5) -> Found:
    """Find books whose title or author contains `query`."""
    _log("find_books", {"query": query, "filters": filters.model_dump() if filters else None, "limit": limit})
    hits = [b for b in BOOKS if query.lower() in (b["title"] + " " + b["author"]).lower()]
    if filters and filters.genre:
        hits = [b for b in hits if b["genre"] == filters.genre]
    if filters and filters.after_year is not None:
        hits = [b for b in hits if b["year"] > filters.after_year]
    return Found(books=[Book(**{k: b[k] for k in ("title", "author", "year")}) for b in hits[:limit]])


@server.tool()
def add_note(note: Note) -> str:
    """Save a reading note (changes the library: not read-only)."""
    _log("add_note", note.model_dump())
    return f"saved a note on {note.book}"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def cover(title: str) -> Image:
    """The cover of a book, as an image."""
    _log("cover", {"title": title})
    return Image(data=PIXEL, format="png")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def borrow_status(title: str) -> str:
    """Whether a book is on loan; fails for books the library does not have."""
    _log("borrow_status", {"title": title})
    if title not in {b["title"] for b in BOOKS}:
        raise ToolError(f"the library has no book called {title!r}")
    return "available"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def slow_count(seconds: float) -> int:
    """Counts for `seconds` (for timeouts)."""
    _log("slow_count", {"seconds": seconds})
    await asyncio.sleep(seconds)
    return int(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
