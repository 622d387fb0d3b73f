"""docker/ecs/dagster.yaml: the instance past one machine loads, validates, and caps as Docker does.

The file is loaded as an operator's daemon loads it — a Dagster instance on a fresh PostgreSQL
database, its launcher and compute log manager built — with every AWS endpoint a closed loopback
port; and its launcher launches runs against the ECS API of the moto server on loopback. Nothing
here calls AWS.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from dagster import DagsterInstance, DagsterRun, instance_for_test
from dagster._config import validate_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.remote_origin import (
    GrpcServerCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test
from dagster._serdes.config_class import ConfigurableClassData

from agentforge_dagster.execution.containers import decide_cap, parse_memory
from agentforge_dagster.instance.ecs_launcher import (
    CappedEcsRunLauncher,
    TaskSize,
    fargate_size,
    task_size_for,
)
from agentforge_dagster.instance.storage import PoolSafePostgresEventLogStorage
from tests.instance.test_ecs_launcher import OFFLINE_AWS

ROOT = Path(__file__).resolve().parents[2]
ECS_YAML = ROOT / "docker" / "ecs" / "dagster.yaml"
DOCKER_YAML = ROOT / "docker" / "dagster.docker.yaml"


def launcher_config(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text())["run_launcher"]["config"])


@pytest.mark.service
def test_the_ecs_instance_loads_with_its_launcher_and_without_calling_aws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_pg_database: Callable[[], str]
) -> None:
    env = {
        **OFFLINE_AWS,
        "DAGSTER_PG_URL": new_pg_database(),
        "AGENTFORGE_S3_BUCKET": "agentforge-prod",
        "AGENTFORGE_S3_ENDPOINT_URL": OFFLINE_AWS["AWS_ENDPOINT_URL"],
        "AGENTFORGE_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/agentforge-run",
        "AGENTFORGE_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/agentforge-exec",
        "AGENTFORGE_ECS_LOG_GROUP": "/agentforge/runs",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ECS_YAML, home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PoolSafePostgresEventLogStorage)
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        launcher = instance.run_launcher
        assert isinstance(launcher, CappedEcsRunLauncher)
        assert launcher.default_size == TaskSize(1024, 2048)
        assert (launcher.max_nano_cpus, launcher.max_mem_limit) == (2 * 10**9, 4 * 1024**3)
        assert launcher.task_definition_dict["requires_compatibilities"] == ["FARGATE"]
        assert launcher.task_role_arn == env["AGENTFORGE_ECS_TASK_ROLE_ARN"]
        assert launcher.secrets_tags == ["agentforge"] and launcher.secrets == []
        assert launcher.ecs.meta.endpoint_url == OFFLINE_AWS["AWS_ENDPOINT_URL"]
        # The same variables reach run tasks as the Docker deployment's run containers, less
        # what ECS gives a task itself (AWS_REGION, the task role's credentials).
        docker_env = set(launcher_config(DOCKER_YAML)["env_vars"])
        assert {"AGENTFORGE_S3_BUCKET", "AGENTFORGE_MODELS"} <= docker_env & set(launcher.env_vars)


def test_the_launcher_config_passes_dagsters_validation_and_a_wrong_one_does_not() -> None:
    schema = CappedEcsRunLauncher.config_type()
    config = launcher_config(ECS_YAML)
    result = validate_config(schema, config)
    assert result.success, result.errors
    assert result.value is not None and result.value["container_name"] == "run"

    unquoted = {**config, "run_resources": {"cpu": 1024, "memory": "2048"}}  # ECS wants strings
    misspelt = {**config, "max_memory": "4g"}
    for wrong, field in ((unquoted, "cpu"), (misspelt, "max_memory")):
        refused = validate_config(schema, wrong)
        assert not refused.success
        assert any(field in error.message for error in refused.errors or [])


@pytest.mark.parametrize(
    ("tags", "size"),
    [
        ({}, TaskSize(1024, 2048)),
        ({"agentforge/mem_limit": "3g"}, TaskSize(1024, 3072)),
        (
            {"agentforge/mem_limit": "400m", "agentforge/nano_cpus": "500000000"},
            TaskSize(512, 1024),
        ),
        (
            {"agentforge/mem_limit": "16g", "agentforge/nano_cpus": "8000000000"},
            TaskSize(2048, 4096),
        ),
    ],
)
def test_a_run_is_capped_alike_on_ecs_and_in_docker(tags: dict[str, str], size: TaskSize) -> None:
    """The cap the Docker deployment gives a run, in ECS units and rounded up to a Fargate size,
    is the size the ECS deployment gives it: the two files' defaults and maxima agree."""
    docker, ecs = launcher_config(DOCKER_YAML), launcher_config(ECS_YAML)
    kwargs = docker["container_kwargs"]
    memory = decide_cap(
        "mem_limit",
        tags.get("agentforge/mem_limit"),
        parse_memory(kwargs["mem_limit"]),
        parse_memory(docker["max_mem_limit"]),
        parse_memory,
    )
    cpus = decide_cap(
        "nano_cpus",
        tags.get("agentforge/nano_cpus"),
        kwargs["nano_cpus"],
        docker["max_nano_cpus"],
        int,
    )
    assert memory.value is not None and cpus.value is not None
    in_docker = fargate_size(TaskSize.from_caps(cpus.value, memory.value))

    default = TaskSize(int(ecs["run_resources"]["cpu"]), int(ecs["run_resources"]["memory"]))
    on_ecs, _ = task_size_for(
        tags, default, ecs["max_nano_cpus"], parse_memory(ecs["max_mem_limit"])
    )
    assert on_ecs == in_docker == size


IMAGE = "agentforge:0.1.0-test"


def order_run(instance: DagsterInstance, tags: dict[str, str]) -> DagsterRun:
    """A run of the order pipeline as the daemon creates it from the code server agentforge."""
    code_server = GrpcServerCodeLocationOrigin(
        host="code-server", port=4000, location_name="agentforge"
    )
    repository = RepositoryPythonOrigin(
        "/opt/venv/bin/python",
        ModuleCodePointer("agentforge_dagster.definitions", "defs"),
        container_image=IMAGE,  # the code server's DAGSTER_CURRENT_IMAGE
    )
    return create_run_for_test(
        instance,
        job_name="order_pipeline",
        tags=tags,
        remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(code_server, "__repository__"), "order_pipeline"
        ),
        job_code_origin=JobPythonOrigin("order_pipeline", repository),
    )


@pytest.mark.service
def test_runs_are_launched_as_ecs_tasks_of_their_size_with_secrets_by_reference(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's launcher, run for real against moto's ECS, Secrets Manager and EC2."""
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,  # the moto server answers every service
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AGENTFORGE_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/agentforge-run",
        "AGENTFORGE_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/agentforge-exec",
        "AGENTFORGE_ECS_LOG_GROUP": "/agentforge/runs",
        "AGENTFORGE_S3_BUCKET": "agentforge-prod",
        "AGENTFORGE_S3_ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com",
        "AGENTFORGE_S3_REGION": "eu-west-1",
        "AGENTFORGE_MODELS": "offline",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    canary = f"postgresql+psycopg2://dagster:canary-{uuid.uuid4().hex}@db/dagster"
    secret = boto3.client("secretsmanager").create_secret(
        Name="DAGSTER_PG_URL", SecretString=canary, Tags=[{"Key": "agentforge", "Value": ""}]
    )
    cluster = f"agentforge-{uuid.uuid4().hex[:8]}"
    ecs = boto3.client("ecs")
    ecs.create_cluster(clusterName=cluster)
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=cluster, Description="runs", VpcId=vpc)["GroupId"]

    document = yaml.safe_load(ECS_YAML.read_text())["run_launcher"]
    config = {
        **document["config"],
        # Outside ECS there is no task of the daemon's to take cluster and network from.
        "use_current_ecs_task_config": False,
        "run_task_kwargs": {
            "cluster": cluster,
            "launchType": "FARGATE",
            "networkConfiguration": {
                "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}
            },
        },
    }
    launcher = ConfigurableClassData(
        document["module"], document["class"], yaml.safe_dump(config)
    ).rehydrate(as_type=CappedEcsRunLauncher)

    def memory_for_moto(params: dict[str, Any], **_: Any) -> None:
        """moto 5.2 cannot run a task whose containers name no memory; ECS on Fargate sizes the
        task, not the container, and so does Dagster. moto's copy gets a reservation."""
        for container in params["containerDefinitions"]:
            container.setdefault("memoryReservation", 64)

    launcher.ecs.meta.events.register(
        "provide-client-params.ecs.RegisterTaskDefinition", memory_for_moto
    )
    with instance_for_test() as instance:
        launcher.register_instance(instance)
        tagged = order_run(
            instance,
            {
                "agentforge/nano_cpus": "500000000",
                "agentforge/mem_limit": "3g",
                "agentforge/order_id": "ord-1",
                "dagster/partition": "ord-1",
            },
        )
        plain = order_run(instance, {"agentforge/order_id": "ord-2", "dagster/partition": "ord-2"})
        tasks = {}
        for run in (tagged, plain):
            launcher.launch_run(LaunchRunContext(run, None))
            arn = instance.get_run_by_id(run.run_id).tags["ecs/task_arn"]  # type: ignore[union-attr]
            [tasks[run.run_id]] = ecs.describe_tasks(
                cluster=cluster, tasks=[arn], include=["TAGS"]
            )["tasks"]
        assert instance.get_run_by_id(tagged.run_id).tags["ecs/memory"] == "3072"  # type: ignore[union-attr]

    # Half a CPU and 3 GiB: a Fargate size, for the task and its one container.
    task = tasks[tagged.run_id]
    assert (task["overrides"]["cpu"], task["overrides"]["memory"]) == ("512", "3072")
    [container] = task["overrides"]["containerOverrides"]
    assert (container["name"], container["cpu"], container["memory"]) == ("run", 512, 3072)
    assert {"key": "agentforge/order_id", "value": "ord-1"} in task["tags"]
    # Without our tags: run_resources, the Docker deployment's default of 1 CPU and 2 GiB.
    default = tasks[plain.run_id]["overrides"]
    assert (default["cpu"], default["memory"]) == ("1024", "2048")

    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])[
        "taskDefinition"
    ]
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert definition["taskRoleArn"] == env["AGENTFORGE_ECS_TASK_ROLE_ARN"]
    [run_container] = definition["containerDefinitions"]
    assert run_container["image"] == IMAGE
    assert run_container["secrets"] == [{"name": "DAGSTER_PG_URL", "valueFrom": secret["ARN"]}]
    assert canary not in json.dumps(definition), "a secret's value in the task definition"
    environment = {item["name"]: item["value"] for item in run_container["environment"]}
    assert environment["AGENTFORGE_S3_BUCKET"] == "agentforge-prod"
    assert run_container["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert run_container["logConfiguration"]["options"]["awslogs-group"] == "/agentforge/runs"
