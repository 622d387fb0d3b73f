"""The ECS run launcher: the same runs on many machines, with the Docker launcher's per-run caps.

Dagster's ``EcsRunLauncher`` (dagster-aws) starts every run as an ECS task of the code location's
image. A task's size is ECS's: CPU units (1024 = one vCPU) and memory in MiB, from the run tags
``ecs/cpu`` and ``ecs/memory``, else the launcher's ``run_resources``. This launcher also reads the
tags the Docker launcher reads — ``agentforge/nano_cpus`` and ``agentforge/mem_limit`` — bounds a
request by the same operator maxima (``max_nano_cpus``, ``max_mem_limit``; by default
``run_resources``) with the same rule (:func:`~agentforge_dagster.execution.containers.decide_cap`),
and rounds it up to the smallest task size Fargate offers that holds it. The run is tagged with the
``ecs/cpu`` and ``ecs/memory`` it got; a request clamped or ignored is an engine event on the run.
A run without our tags is sized as Dagster sizes it. ``run_resources`` must name a Fargate size:
a launcher built with any other is refused.

The instance config that uses it: ``docker/ecs/dagster.yaml``.

Dagster internals used here: ``ConfigurableClassData`` (the constructor argument of every
configurable class; for typing only). The hook overridden, ``get_cpu_and_memory_overrides``, and
``config_type`` are ``EcsRunLauncher``'s own public methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from dagster import DagsterRun, Field, IntSource, StringSource
from dagster_aws.ecs import EcsRunLauncher

from agentforge_dagster.execution.containers import (
    MEM_LIMIT_TAG,
    NANO_CPUS_TAG,
    decide_cap,
    parse_memory,
)

if TYPE_CHECKING:
    from dagster._serdes.config_class import ConfigurableClassData
    from dagster_aws.ecs.container_context import EcsContainerContext

ECS_CPU_TAG = "ecs/cpu"
ECS_MEMORY_TAG = "ecs/memory"
CPU_UNITS_PER_CPU = 1024
NANO_CPUS_PER_CPU = 10**9
MIB = 1024**2

# Task sizes Fargate offers (Linux): CPU units → the memory sizes in MiB allowed with them.
# https://docs.aws.amazon.com/AmazonECS/latest/userguide/task-cpu-memory-error.html
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}


@dataclass(frozen=True)
class TaskSize:
    """An ECS task's size: ``cpu`` in CPU units (1024 = one vCPU), ``memory`` in MiB."""

    cpu: int
    memory: int

    @classmethod
    def from_caps(cls, nano_cpus: int, mem_bytes: int) -> TaskSize:
        """The Docker caps (1e9 nano-CPUs = one CPU; bytes) in ECS units, rounded up."""
        return cls(
            math.ceil(nano_cpus * CPU_UNITS_PER_CPU / NANO_CPUS_PER_CPU), math.ceil(mem_bytes / MIB)
        )

    @property
    def nano_cpus(self) -> int:
        return self.cpu * NANO_CPUS_PER_CPU // CPU_UNITS_PER_CPU

    @property
    def mem_bytes(self) -> int:
        return self.memory * MIB

    @property
    def on_fargate(self) -> bool:
        return self.memory in FARGATE_SIZES.get(self.cpu, ())


def fargate_size(wanted: TaskSize) -> TaskSize:
    """The smallest task size Fargate offers with at least the CPU and memory wanted.

    Fewest CPU units first (CPU is the dearer of the two), then the least memory allowed with them.
    """
    for cpu, memories in FARGATE_SIZES.items():
        if cpu >= wanted.cpu:
            for memory in memories:
                if memory >= wanted.memory:
                    return TaskSize(cpu, memory)
    raise ValueError(
        f"no Fargate task has {wanted.cpu} CPU units and {wanted.memory} MiB "
        "(the largest: 16384 units = 16 vCPU, 122880 MiB = 120 GiB)"
    )


def task_size_for(
    tags: Mapping[str, str],
    default: TaskSize,
    max_nano_cpus: int | None = None,
    max_mem_limit: int | None = None,
) -> tuple[TaskSize, list[str]]:
    """The Fargate size of a run with these tags, and what to tell the operator about it.

    The requests are clamped to the maxima (bytes, nano-CPUs; by default ``default``) exactly as
    the Docker launcher clamps them, then rounded up to a Fargate size.
    """
    cpu = decide_cap("nano_cpus", tags.get(NANO_CPUS_TAG), default.nano_cpus, max_nano_cpus, int)
    memory = decide_cap(
        "mem_limit", tags.get(MEM_LIMIT_TAG), default.mem_bytes, max_mem_limit, parse_memory
    )
    size = fargate_size(
        TaskSize.from_caps(cpu.value or default.nano_cpus, memory.value or default.mem_bytes)
    )
    return size, [note for note in (cpu.note, memory.note) if note]


class CappedEcsRunLauncher(EcsRunLauncher):
    """``EcsRunLauncher`` sizing each run's task from the ``agentforge/*`` caps tags."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        max_mem_limit: str | None = None,
        max_nano_cpus: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inst_data=inst_data, **kwargs)
        try:
            self.default_size = TaskSize(
                int(self.run_resources["cpu"]), int(self.run_resources["memory"])
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(
                "run_launcher: run_resources needs cpu (CPU units, 1024 = one vCPU) and memory "
                f"(MiB) as whole numbers in quotes, e.g. cpu: '1024', memory: '2048' ({exc!r})"
            ) from exc
        if not self.default_size.on_fargate:
            raise ValueError(
                f"run_launcher: run_resources {self.default_size} is not a Fargate task size; "
                f"the nearest above is {fargate_size(self.default_size)}"
            )
        self.max_mem_limit = parse_memory(max_mem_limit) if max_mem_limit else None
        self.max_nano_cpus = max_nano_cpus

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            **super().config_type(),
            "max_mem_limit": Field(
                StringSource,
                is_required=False,
                description="Largest memory a run may ask for with the agentforge/mem_limit tag "
                "(512m, 4g; default: run_resources.memory).",
            ),
            "max_nano_cpus": Field(
                IntSource,
                is_required=False,
                description="Largest CPU share (1e9 = one CPU) a run may ask for with the "
                "agentforge/nano_cpus tag (default: run_resources.cpu).",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data, **config_value)

    def get_cpu_and_memory_overrides(
        self, container_context: EcsContainerContext, run: DagsterRun
    ) -> Mapping[str, str]:
        """Dagster's sizing, unless the run asks with our tags: then the size they come to."""
        if NANO_CPUS_TAG not in run.tags and MEM_LIMIT_TAG not in run.tags:
            return super().get_cpu_and_memory_overrides(container_context, run)
        size, notes = task_size_for(
            run.tags, self.default_size, self.max_nano_cpus, self.max_mem_limit
        )
        overrides = {"cpu": str(size.cpu), "memory": str(size.memory)}
        self._instance.add_run_tags(
            run.run_id, {ECS_CPU_TAG: overrides["cpu"], ECS_MEMORY_TAG: overrides["memory"]}
        )
        self._instance.report_engine_event(
            message=f"Per-run caps: an ECS task of {size.cpu} CPU units and {size.memory} MiB"
            + "".join(f"; {note}" for note in notes),
            dagster_run=run,
            cls=self.__class__,
        )
        return overrides
