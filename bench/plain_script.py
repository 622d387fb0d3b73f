"""What a user would write instead of this project: asyncio, the OpenAI SDK and tenacity.

Benchmark (a) of ``bench/suite.py``. Every order goes through the same six steps as ours (take it
in, plan it with the model, draft it with the model, review it, deliver it, invoice it); each step
is retried on its own with tenacity (7 attempts, random exponential back-off, as our steps), model
calls are bounded by a semaphore set to the provider's concurrency limit, and all orders run
concurrently in one process. There is no durability: what this process holds is all there is, an
order whose step runs out of attempts is failed for good, and nothing remembers an answer already
paid for when a step has to run again.

Faults are injected exactly as the project's drills inject them (``injected_fault``: the same
function of seed, order, step, attempt and phase, before and after each step's work), so both
systems meet the same faults. Prints one JSON object with the figures.

    .venv/bin/python bench/plain_script.py --base-url http://127.0.0.1:PORT/v1 --orders 100
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agentforge_dagster.execution.faults import injected_fault

STEPS = ("intake", "plan", "draft", "review", "delivery", "invoice")


class StepFailed(Exception):
    """A step's attempt failed in a way worth another attempt."""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client = openai.AsyncOpenAI(
        base_url=args.base_url, api_key="bench", max_retries=0, timeout=args.timeout
    )
    calls = asyncio.Semaphore(args.concurrency)
    out = Path(tempfile.mkdtemp(prefix="plain-script-"))
    invoices = (out / "invoices.csv").open("a", newline="")
    delivered: dict[str, int] = {}
    latencies: list[float] = []
    failed: list[str] = []
    attempts = 0

    async def ask(instruction: str, context: dict[str, Any]) -> dict[str, Any]:
        async with calls:
            try:
                answer = await client.chat.completions.create(
                    model=args.model,
                    messages=[
                        {"role": "user", "content": instruction + "\n\n" + json.dumps(context)}
                    ],
                    response_format={"type": "json_object"},
                    max_tokens=1000,
                )
            except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError):
                raise StepFailed("the provider failed") from None
        try:
            parsed: dict[str, Any] = json.loads(answer.choices[0].message.content or "")
        except ValueError:
            raise StepFailed("the answer is not JSON") from None
        return parsed

    async def work(step: str, order: dict[str, Any], state: dict[str, Any]) -> None:
        if step == "intake":
            if not order.get("brief"):
                raise ValueError("an order needs a brief")
        elif step == "plan":
            state["plan"] = await ask(
                "Plan the deliverable for this order as JSON.", {"order": order}
            )
        elif step == "draft":
            state["draft"] = await ask(
                "Write the deliverable that follows this plan, as JSON.",
                {"brief": order["brief"], "plan": state["plan"]},
            )
        elif step == "review":
            if not state["draft"]:
                raise ValueError("an empty draft")
        elif step == "delivery":
            (out / f"{order['order_id']}.json").write_text(json.dumps(state["draft"]))
            delivered[order["order_id"]] = delivered.get(order["order_id"], 0) + 1
        else:
            csv.writer(invoices).writerow([order["order_id"], order["price"]])

    async def one(order: dict[str, Any], started: float) -> None:
        nonlocal attempts
        state: dict[str, Any] = {}
        try:
            for step in STEPS:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(7),
                    wait=wait_random_exponential(multiplier=args.retry_delay, max=30),
                    retry=retry_if_exception_type(StepFailed),
                    reraise=True,
                ):
                    with attempt:
                        attempts += 1
                        number = attempt.retry_state.attempt_number
                        point = {"order_id": order["order_id"], "step": step, "attempt": number}
                        if injected_fault(
                            rate=args.fault_rate, seed=args.seed, phase="before", **point
                        ):
                            raise StepFailed("injected before the work")
                        await work(step, order, state)
                        if injected_fault(
                            rate=args.fault_rate, seed=args.seed, phase="after", **point
                        ):
                            raise StepFailed("injected after the work")
        except Exception:
            failed.append(order["order_id"])
            return
        latencies.append(time.monotonic() - started)

    orders = [
        {
            "order_id": f"plain-{args.seed}-{i:05d}",
            "customer": f"c{i % 5}",
            "service": "blog_post",
            "brief": f"Benchmark order {i} about reliable pipelines",
            "price": "100.00",
        }
        for i in range(args.orders)
    ]
    started = time.monotonic()
    await asyncio.gather(*(one(order, started) for order in orders))
    wall = time.monotonic() - started
    invoices.close()
    await client.close()
    completed = len(latencies)  # every step done, the invoice included
    return {
        "orders": len(orders),
        "delivered": completed,
        "twice": sum(1 for n in delivered.values() if n > 1),
        "failed": len(failed),
        "lost": len(orders) - completed - len(failed),
        "step_attempts": attempts,
        "latencies": latencies,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--retry-delay", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=60.0)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
