"""The built-in offline model: a deterministic template writer, no network, no weights, no cost.

It is honest about what it is (its model name says so) and exists so the pipeline, its retries
and its tests run anywhere. It exercises the review loop on purpose: about one first draft in four
leaves out the plan's last section, and a revision that is told so puts it back.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from agentforge_dagster.domain.models import SERVICE_OUTLINES
from agentforge_dagster.execution.llm.base import ModelRequest, ModelResponse, estimate_tokens

OFFLINE_MODEL_NAME = "agentforge-offline-template-v1"

# Tone and length per service; the sections are the service's outline (SERVICE_OUTLINES).
_STYLES: dict[str, tuple[str, int]] = {
    "blog_post": ("friendly", 600),
    "product_description": ("persuasive", 250),
    "email_campaign": ("direct", 200),
    "press_release": ("formal", 450),
}
_STOPWORDS = frozenset(
    "about after also been before being from have into just like make more most much only "
    "other over some such than that their them then there these they this those through "
    "very what when where which while with would your write please need want ".split()
)


def keywords_of(text: str, limit: int = 5) -> list[str]:
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", text)]
    seen: dict[str, None] = {}
    for word in words:
        if word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)[:limit] or ["service"]


class OfflineModel:
    """Deterministic offline model: the same request always gets the same answer."""

    name = "offline"
    model = OFFLINE_MODEL_NAME

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        writers = {"plan": self._plan, "draft": self._draft, "revise": self._draft}
        if request.task not in writers:
            raise ValueError(f"the offline model has no writer for task {request.task!r}")
        text = json.dumps(writers[request.task](request), ensure_ascii=False)
        return ModelResponse(
            text=text,
            provider=self.name,
            model=self.model,
            input_tokens=estimate_tokens(request.prompt),
            output_tokens=estimate_tokens(text),
            cost_usd=0.0,
            latency_s=time.perf_counter() - started,
            served_model=self.model,
        )

    @staticmethod
    def _plan(request: ModelRequest) -> dict[str, Any]:
        order = request.context["order"]
        sections = list(SERVICE_OUTLINES[order["service"]])
        tone, words = _STYLES[order["service"]]
        brief_words = order["brief"].split()
        title = " ".join(brief_words[:8]).rstrip(".,;:") or "Untitled"
        return {
            "title": title[:300],
            "sections": sections,
            "tone": tone,
            "word_target": words,
            "keywords": keywords_of(order["brief"]),
        }

    @staticmethod
    def _draft(request: ModelRequest) -> dict[str, Any]:
        plan = request.context["plan"]
        sections = list(plan["sections"])
        digest = int(hashlib.sha256(request.prompt.encode("utf-8")).hexdigest()[:8], 16)
        if request.task == "draft" and len(sections) > 1 and digest % 4 == 0:
            sections = sections[:-1]  # the simulated lapse the review is there to catch
        keywords = plan["keywords"]
        per_section = max(20, plan["word_target"] // max(1, len(plan["sections"])))
        body_sections = []
        for index, heading in enumerate(sections):
            keyword = keywords[index % len(keywords)]
            sentence = (
                f"In a {plan['tone']} voice, this part covers {keyword} as asked in the brief "
                f"and explains what it means for the reader."
            )
            repeats = max(1, per_section // len(sentence.split()))
            body_sections.append({"heading": heading, "body": " ".join([sentence] * repeats)})
        return {"title": plan["title"], "sections": body_sections}
