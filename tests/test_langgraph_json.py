"""langgraph.json names a loadable compiled graph, as `langgraph dev` and Studio load it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from langgraph.graph.state import CompiledStateGraph

ROOT = Path(__file__).resolve().parents[1]


def test_langgraph_json_loads_the_agent_graph_from_its_file():
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, attribute = config["graphs"]["agent"].split(":")
    spec = importlib.util.spec_from_file_location("agent_graph_file", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    graph = getattr(module, attribute)
    assert isinstance(graph, CompiledStateGraph)
    assert {"planner", "validate", "tools"} <= set(graph.get_graph().nodes)
