"""The graph `test_langgraph_server_crash.py` serves: the harness tools (one side-effecting), a
live model from OPENAI_BASE_URL, and the ledger exactly as the shipped graph configures it."""

from toolrail.checkpoints import ledger_from_environment
from toolrail.graphs.agent import build_graph
from toolrail.models import openai_model
from toolrail.testing.harness_tools import harness_tools

graph = build_graph(model=openai_model(max_retries=0), tools=harness_tools, ledger=ledger_from_environment())
