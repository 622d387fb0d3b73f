"""Schedules of this project run on UTC, whatever the machine's zone."""

from __future__ import annotations

from typing import Any

import dagster as dg


def utc_schedule(name: str, job: Any, cron: str, description: str) -> dg.ScheduleDefinition:
    """A schedule on UTC time, running by default."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
