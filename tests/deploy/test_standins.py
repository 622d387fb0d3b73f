"""The local stand-ins for postgres:15 and minio/minio do what docker/compose.yaml relies on.

docker/build-standins.sh builds them on machines that cannot pull; compose.yaml still names the
real images. Real containers on host networking and free ports, configured exactly as compose
configures them (secrets as files in /run/secrets, the init script, the healthchecks).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from agentforge_dagster.persistence.deliverables import S3Deliverables, presigned_link
from tests.deploy.conftest import IMAGE_UID, ROOT, _free_port, _script
from tests.orchestration.daemon import wait_until

pytestmark = [pytest.mark.service, pytest.mark.xdist_group("deploy")]
TAGS = {"postgres": "postgres:15", "minio": "minio/minio:latest"}
STANDIN_LABEL = "org.agentforge.standin"
RUN_LABEL = "agentforge/standins-test"
SECRET = f"standin-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def standins(docker_engine: Any) -> dict[str, str]:
    """Both stand-ins built by the script; a second run is a cache hit."""
    tags = _script(["bash", "docker/build-standins.sh"], "build-standins").split()
    assert tags == list(TAGS.values())
    for name, tag in TAGS.items():
        labels = docker_engine.images.get(tag).labels
        assert labels.get(STANDIN_LABEL) == name, f"{tag} is not our stand-in: {labels}"
    again = subprocess.run(
        ["bash", "docker/build-standins.sh"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert again.stdout.split() == tags
    assert again.stderr.count("is current") == 2 and "built " not in again.stderr, again.stderr
    return TAGS


@pytest.fixture
def run(docker_engine: Any) -> Iterator[Callable[..., Any]]:
    """Start containers on the host's network, labelled for this test; all removed at the end."""
    label = uuid.uuid4().hex[:12]

    def start(image: str, command: list[str], **kwargs: Any) -> Any:
        return docker_engine.containers.run(
            image,
            command,
            detach=True,
            network_mode="host",
            labels={RUN_LABEL: label},
            name=f"agentforge-standin-{label}-{uuid.uuid4().hex[:6]}",
            **kwargs,
        )

    try:
        yield start
    finally:
        for container in docker_engine.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={label}"}
        ):
            container.remove(force=True, v=True)


def _secrets(folder: Path, name: str) -> Path:
    """A secrets folder as docker/make-secrets.sh makes it: readable by the project's user only."""
    folder.mkdir(mode=0o500)
    path = folder / name
    path.write_text(SECRET + "\n")
    path.chmod(0o400)
    os.chown(path, IMAGE_UID, IMAGE_UID)
    os.chown(folder, IMAGE_UID, IMAGE_UID)
    return folder


def _wait(container: Any, what: str, *check: str, timeout: float = 60) -> None:
    """Until the command (run in the container) succeeds; the container's log on a time-out."""
    try:
        wait_until(lambda: _exec(container, *check)[0] == 0, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{container.logs(tail=30).decode()}") from None


def _exec(container: Any, *args: str) -> tuple[int, str]:
    code, output = container.exec_run(list(args))
    return int(code), output.decode(errors="replace")


def test_postgres_standin_as_compose_runs_it(
    standins: dict[str, str], run: Callable[..., Any], tmp_path: Path
) -> None:
    port, user, db, business = _free_port(), "agentforge_t", "dagster_t", "business_t"
    container = run(
        standins["postgres"],
        ["postgres", "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1"],
        environment={
            "POSTGRES_USER": user,
            "POSTGRES_PASSWORD_FILE": "/run/secrets/dagster_pg_password",
            "POSTGRES_DB": db,
            "AGENTFORGE_DB": business,
        },
        volumes=[
            f"{_secrets(tmp_path / 'secrets', 'dagster_pg_password')}:/run/secrets:ro",
            f"{ROOT / 'docker' / 'postgres-init.sh'}:/docker-entrypoint-initdb.d/10-agentforge.sh:ro",
        ],
    )
    # compose's healthcheck, word for word.
    healthcheck = f"pg_isready -h 127.0.0.1 -p {port} -U {user} -d {db}"
    _wait(container, "pg_isready", "sh", "-c", healthcheck)

    with (
        psycopg2.connect(
            host="127.0.0.1", port=port, user=user, password=SECRET, dbname=db
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT current_user, current_database()")
        assert cur.fetchone() == (user, db)
        cur.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
            (business,),
        )
        # docker/postgres-init.sh ran (initdb.d) with POSTGRES_USER/POSTGRES_DB/AGENTFORGE_DB.
        assert cur.fetchall() == [(business, user)]
    conn.close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=port, user=user, password="wrong", dbname=db)

    # The server runs as postgres, not root; a restart keeps the data and skips the init.
    code, status = _exec(container, "cat", "/proc/1/status")
    assert code == 0 and "\nUid:\t0\t" not in status
    container.restart(timeout=10)
    _wait(container, "pg_isready after a restart", "sh", "-c", healthcheck)
    assert b"skipping initialization" in container.logs()


def _s3(endpoint: str, secret: str = SECRET, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="agentforge",
        aws_secret_access_key=secret,
        config=Config(**config) if config else None,
    )


def _refused(url: str) -> tuple[int, bytes]:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)
    return caught.value.code, caught.value.read()


def test_minio_standin_as_compose_runs_it(
    standins: dict[str, str], run: Callable[..., Any], tmp_path: Path
) -> None:
    port, console = _free_port(), _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    container = run(
        standins["minio"],
        ["server", "/data", "--address", f"127.0.0.1:{port}",
         "--console-address", f"127.0.0.1:{console}"],
        environment={
            "MINIO_ROOT_USER": "agentforge",
            "MINIO_ROOT_PASSWORD_FILE": "aws_secret_access_key",  # read from /run/secrets
        },
        volumes=[
            f"{_secrets(tmp_path / 'secrets', 'aws_secret_access_key')}:/run/secrets:ro",
            f"{data}:/data",
        ],
    )  # fmt: skip
    # compose's healthcheck: ["CMD", "mc", "ready", "local"].
    _wait(container, "mc ready local", "mc", "ready", "local", timeout=30)

    s3 = _s3(endpoint)
    bucket = f"agentforge-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    # The project's own calls: put_object with ChecksumSHA256 and a presigned GET of a version.
    deliveries = S3Deliverables(client=s3, bucket=bucket)
    first = deliveries.put("order-1", b"first delivery")
    second = deliveries.put("order-1", b"second delivery")
    assert first != second  # two versions of one key
    assert deliveries.read(first) == b"first delivery"
    with urllib.request.urlopen(presigned_link(s3, first, 60), timeout=10) as answer:
        assert answer.read() == b"first delivery"
    key = "deliveries/order-1.md"
    v4_link = _s3(endpoint, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60
    )
    assert "X-Amz-Signature=" in v4_link
    with urllib.request.urlopen(v4_link, timeout=10) as answer:
        assert answer.read() == b"second delivery"

    # A body that does not have the SHA-256 it claims is refused, as S3 does.
    with pytest.raises(ClientError) as bad_digest:
        s3.put_object(
            Bucket=bucket,
            Key="bad",
            Body=b"these bytes",
            ChecksumSHA256=base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode(),
        )
    assert bad_digest.value.response["Error"]["Code"] == "BadDigest"

    # Refused: a wrong secret, an unknown user, no signature, a tampered link.
    with pytest.raises(ClientError) as wrong:
        _s3(endpoint, secret="not-the-secret").list_buckets()
    assert wrong.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert wrong.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as unknown:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="somebody",
            aws_secret_access_key=SECRET,
        ).get_object(Bucket=bucket, Key=key)
    assert unknown.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    for url in (f"{endpoint}/{bucket}/{key}", f"{endpoint}/", f"{endpoint}/moto-api/data.json"):
        code, body = _refused(url)
        assert code == 403 and b"<Code>AccessDenied</Code>" in body, (url, body)
    code, body = _refused(v4_link.replace("order-1.md", "order-2.md"))
    assert code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body

    # The buckets outlive a restart (pickled into /data).
    container.restart(timeout=10)
    _wait(container, "mc ready local after a restart", "mc", "ready", "local", timeout=30)
    assert deliveries.read(first) == b"first delivery"
    assert deliveries.read(second) == b"second delivery"

    # `mc ready` fails when nothing answers on the address.
    idle = run(
        standins["minio"],
        ["ready", "local"],
        entrypoint="mc",
        environment={"MINIO_ADDRESS": f"127.0.0.1:{_free_port()}"},
    )
    assert idle.wait(timeout=30)["StatusCode"] != 0
