"""What a competent model answers, for the fake provider: the offline model's JSON, over HTTP.

The fake server answers each request with this function of its body, so an order runs on a real
provider (the official SDK, the wire, the gateway's validation) and gets the answers the offline
model would give. The benchmarks (bench/suite.py) use the same brain.
"""

from __future__ import annotations

import json
from typing import Any

from agentforge_dagster.execution.llm.base import ModelRequest
from agentforge_dagster.execution.llm.offline import OfflineModel
from tests.fakes.llm_server import user_prompt

TASKS = {"Plan the": "plan", "Write the": "draft", "Revise the": "revise"}


def offline_brain(body: dict[str, Any]) -> str:
    """The offline model's answer to the prompt's task (plan, draft or revise)."""
    prompt = user_prompt(body)
    instruction, rest = prompt.split("\n\n", 1)
    task = next(t for prefix, t in TASKS.items() if instruction.startswith(prefix))
    context, _ = json.JSONDecoder().raw_decode(rest)
    return OfflineModel().complete(ModelRequest(task=task, prompt=prompt, context=context)).text
