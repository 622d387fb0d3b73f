"""Model providers: what a provider is (:mod:`.base`), the built-in offline model (:mod:`.offline`),
the OpenAI-compatible and Anthropic providers (:mod:`.openai`, :mod:`.anthropic`, sharing
:mod:`.sdk` and what an answer is held to on the wire, :mod:`.wire`), and which class answers for
which kind (:mod:`.registry`). Importing this package imports no SDK.
"""

from agentforge_dagster.execution.llm.base import (
    DEFAULT_PRICES,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    estimate_tokens,
)

__all__ = ["DEFAULT_PRICES", "ModelProvider", "ModelRequest", "ModelResponse", "estimate_tokens"]
