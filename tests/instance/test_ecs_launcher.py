"""The ECS run launcher's per-run caps: Docker's caps in ECS units, on Fargate's task sizes.

No AWS call is made: boto3's clients are built against a closed loopback port.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRun
from dagster_aws.ecs.container_context import EcsContainerContext

from agentforge_dagster.instance.ecs_launcher import (
    FARGATE_SIZES,
    CappedEcsRunLauncher,
    TaskSize,
    fargate_size,
    task_size_for,
)

GiB = 1024**3
MiB = 1024**2
# Credentials and a region so boto3 builds its clients; every endpoint a closed port.
OFFLINE_AWS = {
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}
DEFAULT = TaskSize(1024, 2048)  # 1 vCPU, 2 GiB: the Docker deployment's container_kwargs


@pytest.fixture
def offline_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OFFLINE_AWS.items():
        monkeypatch.setenv(key, value)


def test_docker_caps_become_ecs_units_rounded_up() -> None:
    assert TaskSize.from_caps(10**9, 2 * GiB) == DEFAULT
    assert TaskSize.from_caps(500_000_000, 512 * MiB) == TaskSize(512, 512)
    assert TaskSize.from_caps(1, 1) == TaskSize(1, 1)
    assert (DEFAULT.nano_cpus, DEFAULT.mem_bytes) == (10**9, 2 * GiB)


@pytest.mark.parametrize(
    ("wanted", "size"),
    [
        (TaskSize(1024, 2048), TaskSize(1024, 2048)),  # a Fargate size already
        (TaskSize(512, 3072), TaskSize(512, 3072)),  # half a CPU, 3 GiB
        (TaskSize(256, 3072), TaskSize(512, 3072)),  # a quarter CPU holds at most 2 GiB
        (TaskSize(1, 1), TaskSize(256, 512)),  # the smallest there is
        (TaskSize(1024, 1024), TaskSize(1024, 2048)),  # one vCPU comes with 2 GiB at least
        (TaskSize(1024, 8193), TaskSize(2048, 9216)),  # over 8 GiB needs 2 vCPU
        (TaskSize(2048, 20 * 1024), TaskSize(4096, 20 * 1024)),
        (TaskSize(8192, 17 * 1024), TaskSize(8192, 20 * 1024)),  # 8 vCPU: 4 GiB steps
    ],
)
def test_a_request_gets_the_smallest_fargate_size_that_holds_it(
    wanted: TaskSize, size: TaskSize
) -> None:
    assert fargate_size(wanted) == size
    assert size.on_fargate


def test_the_fargate_table_is_ecss() -> None:
    assert list(FARGATE_SIZES) == [256, 512, 1024, 2048, 4096, 8192, 16384]
    assert FARGATE_SIZES[1024] == (2048, 3072, 4096, 5120, 6144, 7168, 8192)
    assert (FARGATE_SIZES[4096][0], FARGATE_SIZES[4096][-1]) == (8192, 30720)
    assert (FARGATE_SIZES[16384][0], FARGATE_SIZES[16384][-1]) == (32768, 122880)
    for cpu, memories in FARGATE_SIZES.items():
        for memory in memories:
            assert fargate_size(TaskSize(cpu, memory)) == TaskSize(cpu, memory)


def test_a_task_larger_than_fargate_offers_is_refused() -> None:
    with pytest.raises(ValueError, match="no Fargate task"):
        fargate_size(TaskSize(16384, 122881))


def test_requests_are_clamped_as_in_docker_then_rounded_up() -> None:
    asked = {"agentforge/nano_cpus": "500000000", "agentforge/mem_limit": "3g"}
    assert task_size_for(asked, DEFAULT, 2 * 10**9, 4 * GiB) == (TaskSize(512, 3072), [])
    size, notes = task_size_for({"agentforge/mem_limit": "8g"}, DEFAULT, 2 * 10**9, 4 * GiB)
    assert size == TaskSize(1024, 4096)  # memory clamped to 4 GiB, the default CPU
    assert len(notes) == 1 and "clamped to the max" in notes[0]
    # Without maxima the default is the ceiling, as for the Docker launcher.
    assert task_size_for({"agentforge/nano_cpus": "4000000000"}, DEFAULT)[0] == DEFAULT
    size, notes = task_size_for({"agentforge/mem_limit": "lots"}, DEFAULT, None, 4 * GiB)
    assert size == DEFAULT and "ignored" in notes[0]


@pytest.fixture
def launcher(offline_aws: None) -> Iterator[tuple[CappedEcsRunLauncher, DagsterInstance]]:
    from dagster import instance_for_test

    with instance_for_test() as instance:
        ecs = CappedEcsRunLauncher(
            run_resources={"cpu": "1024", "memory": "2048"},
            max_nano_cpus=2 * 10**9,
            max_mem_limit="4g",
            use_current_ecs_task_config=False,
        )
        ecs.register_instance(instance)
        yield ecs, instance


def sized(launcher: CappedEcsRunLauncher, run: DagsterRun) -> dict[str, str]:
    context = EcsContainerContext.create_for_run(run, launcher)
    return dict(launcher.get_cpu_and_memory_overrides(context, run))


def test_a_run_with_our_tags_gets_its_ecs_size_and_tags(
    launcher: tuple[CappedEcsRunLauncher, DagsterInstance],
) -> None:
    ecs, instance = launcher
    run = instance.add_run(
        DagsterRun(
            job_name="order_pipeline",
            tags={"agentforge/nano_cpus": "500000000", "agentforge/mem_limit": "8g"},
        )
    )
    assert sized(ecs, run) == {"cpu": "512", "memory": "4096"}
    tags = instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]
    assert (tags["ecs/cpu"], tags["ecs/memory"]) == ("512", "4096")
    [event] = [
        record.event_log_entry
        for record in instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT
        ).records
    ]
    assert "512 CPU units and 4096 MiB" in event.message
    assert "clamped to the max" in event.message


def test_a_run_without_our_tags_is_sized_as_dagster_sizes_it(
    launcher: tuple[CappedEcsRunLauncher, DagsterInstance],
) -> None:
    ecs, instance = launcher
    plain = instance.add_run(DagsterRun(job_name="order_pipeline"))
    assert sized(ecs, plain) == {"cpu": "1024", "memory": "2048"}  # run_resources
    own = instance.add_run(
        DagsterRun(job_name="order_pipeline", tags={"ecs/cpu": "2048", "ecs/memory": "8192"})
    )
    assert sized(ecs, own) == {"cpu": "2048", "memory": "8192"}  # Dagster's own tags
    assert "ecs/cpu" not in instance.get_run_by_id(plain.run_id).tags  # type: ignore[union-attr]


def test_a_default_size_fargate_does_not_offer_is_refused_when_built(offline_aws: None) -> None:
    with pytest.raises(ValueError, match=r"not a Fargate task size.*cpu=1024, memory=2048"):
        CappedEcsRunLauncher(run_resources={"cpu": "1024", "memory": "1024"})
    with pytest.raises(ValueError, match="run_resources needs cpu"):
        CappedEcsRunLauncher(run_resources={"cpu": "1 vCPU", "memory": "2048"})
    with pytest.raises(ValueError, match="run_resources needs cpu"):
        CappedEcsRunLauncher()
