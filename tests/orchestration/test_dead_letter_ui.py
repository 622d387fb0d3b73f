"""The dead-letter queue from the UI alone: the asset's table, and replays from the launchpad job."""

from __future__ import annotations

from dagster import DagsterInstance, Definitions, materialize

from agentforge_dagster.domain.state import OrderStatus
from agentforge_dagster.orchestration.dead_letter_ui import dead_letter_queue_asset
from agentforge_dagster.orchestration.runner import run_replays
from agentforge_dagster.persistence.resources import BusinessStoreResource
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings
from tests.conftest import dead_lettered_order


def test_the_queue_asset_lists_the_letters_and_the_job_replays_them(
    defs: Definitions, instance: DagsterInstance, store: BusinessStore, settings: AgentForgeSettings
) -> None:
    order_id, _ = dead_lettered_order(defs, instance, store)
    resources = {
        "store": BusinessStoreResource(database_url=settings.storage.resolved_database_url())
    }
    shown = materialize([dead_letter_queue_asset], instance=instance, resources=resources)
    [materialization] = shown.asset_materializations_for_node("dead_letter_queue")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["letters"] == 1 and metadata["letters_transient"] == 1
    assert f"| {order_id} | delivery | transient |" in str(metadata["queue"])

    job = defs.resolve_job_def("replay_dead_letters")

    def launch(config: dict, tags: dict | None = None):
        return job.execute_in_process(
            run_config={"ops": {"replay_dead_letter_orders": {"config": config}}},
            instance=instance,
            tags=tags,
            raise_on_error=False,
        )

    assert not launch({}).success, "name orders or an error class"
    done = launch({"error_class": "transient"}, {"agentforge/actor": "olga"})
    assert done.success and done.output_for_node("replay_dead_letter_orders") == 1
    assert store.orders.status(order_id) is OrderStatus.REPLAYED
    [asked] = [
        r["detail"]["actor"]
        for r in store.audit.audit_rows(order_id)
        if r["event"] == "transition" and r["detail"]["to"] == "replayed"
    ]
    assert asked == "olga"
    again = launch({"order_ids": [order_id]})
    assert again.success and again.output_for_node("replay_dead_letter_orders") == 0, "refused"
    [replay] = run_replays(defs, instance, store)
    assert replay.status is OrderStatus.COMPLETED
    empty = materialize([dead_letter_queue_asset], instance=instance, resources=resources)
    [after] = empty.asset_materializations_for_node("dead_letter_queue")
    assert after.metadata["letters"].value == 0
