"""Limits kept once because several layers apply them (plain Python: the CLI reads them too).

What a model provider's answer is held to (a provider is untrusted input): the defaults of the
settings ``AGENTFORGE_MAX_PROVIDER_WAIT_SECONDS`` and ``AGENTFORGE_MODEL_MAX_RESPONSE_BYTES``,
which the providers, the step back-off and the shared rate limiter all apply; and the longest text
a person may deliver instead of a held draft (the review store and ``agentforge review edit``);
and how long a runner's lease on an order holds (``AGENTFORGE_LEASE_SECONDS``).
"""

from __future__ import annotations

# The longest wait a provider may ask for (Retry-After): an answer asking for more fails as
# rate-limited and is waited no longer than this, and nothing anywhere sleeps longer for it.
MAX_PROVIDER_WAIT_S = 300.0
# The most bytes of an answer read off the wire (a 64k-token answer is about 256 KB of JSON).
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
# How long a runner's claim on an order holds unless renewed (the store, the resource and the
# setting ``AGENTFORGE_LEASE_SECONDS`` default to it).
DEFAULT_LEASE_SECONDS = 120.0
# The most tokens a count may say before it is taken for a lie and estimated instead.
MAX_TOKEN_COUNT = 10_000_000
# The longest text a person may deliver instead of a held draft (agentforge review edit).
MAX_EDITED_CHARS = 200_000
