"""The front door: TLS, basic auth, a read-only credential, websockets, and nothing else exposed.

Logins are made by docker/make-secrets.sh (bcrypt cost 10, as for operators); the password is
checked once per login, later requests carry the signed session cookie (docker/proxy/session.js).

Brought up on the package's Docker deployment (tests/deploy/conftest.py): two webservers of the
project image (one ``--read-only``) bound to loopback, reaching the engine through the socket
proxy, secrets as files; the nginx front door of the proxy image, the one listener on a
non-loopback address. Last, the canary secret is looked for everywhere the stack wrote.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import create_engine, make_url, text

from tests.conftest import PG_ADMIN_URL
from tests.deploy.conftest import CANARY, PROXY_UID, ROOT, DockerDeployment, _free_port
from tests.orchestration.daemon import wait_until

pytestmark = [pytest.mark.service, pytest.mark.xdist_group("deploy")]
OPERATOR = ("operator", f"op-{uuid.uuid4().hex[:12]}")
VIEWER = ("viewer", f"view-{uuid.uuid4().hex[:12]}")
LAUNCH = """mutation {
  launchPipelineExecution(executionParams: {selector: {repositoryLocationName: "agentforge",
      repositoryName: "__repository__", jobName: "order_pipeline"}}) { __typename }
}"""


SESSION = "agentforge_session"


def make_login(secrets: Path, proxy_image: str, user: str, password: str, role: str) -> None:
    """A login as the README tells operators: docker/make-secrets.sh DIR user NAME [viewer]."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "AGENTFORGE_"))}
    done = subprocess.run(
        ["bash", "docker/make-secrets.sh", str(secrets), "user", user, role, "--password-stdin"],
        input=password + "\n",
        env={**env, "ENV_FILE": "/nonexistent", "PROXY_IMAGE": proxy_image},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def start_front_door(
    dep: DockerDeployment,
    proxy_image: str,
    folder: Path,
    listen: str,
    upstream: str,
    read_only_upstream: str,
) -> Any:
    """The proxy image as the front door, hardened like the rest; users and TLS state in folder."""
    secrets, state = folder / "secrets", folder / "state"
    users = secrets / "front-door"
    state.mkdir(parents=True)
    if not users.exists():
        make_login(secrets, proxy_image, *OPERATOR, "operator")
        make_login(secrets, proxy_image, *VIEWER, "viewer")
    os.chown(state, PROXY_UID, PROXY_UID)
    label_key, label_value = dep.label.split("=")
    return dep.client.containers.run(
        proxy_image,
        ["front-door"],
        detach=True,
        name=f"agentforge-front-door-{uuid.uuid4().hex[:8]}",
        network_mode="host",
        environment={
            "FRONT_DOOR_LISTEN": listen,
            "FRONT_DOOR_UPSTREAM": upstream,
            "FRONT_DOOR_READ_ONLY_UPSTREAM": read_only_upstream,
            "FRONT_DOOR_SERVER_NAME": "localhost",
            "FRONT_DOOR_OPERATORS_FILE": "/etc/agentforge-proxy/users/operators.htpasswd",
            "FRONT_DOOR_VIEWERS_FILE": "/etc/agentforge-proxy/users/viewers.htpasswd",
        },
        volumes=[f"{users}:/etc/agentforge-proxy/users:ro", f"{state}:/var/lib/agentforge-proxy"],
        labels={label_key: label_value, "agentforge/role": "front-door"},
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )


def start_webserver(dep: DockerDeployment, port: int, *, read_only: bool) -> Any:
    """A webserver of the project image as compose runs it: loopback, secrets as files, proxy."""
    label_key, label_value = dep.label.split("=")
    command = [
        *("dagster-webserver", "-h", "127.0.0.1", "-p", str(port)),
        *("-w", "/opt/dagster/app/test-workspace.yaml"),
    ]
    return dep.client.containers.run(
        dep.images["A"],
        [*command, "--read-only"] if read_only else command,
        detach=True,
        name=f"agentforge-webserver-{port}",
        network_mode="host",
        environment={
            **dep.secret_environment(),
            "DAGSTER_RUN_IMAGE": dep.images["A"],
            "AGENTFORGE_SECRETS_DIR": str(dep.secrets_dir),
            "DOCKER_HOST": "unix:///run/docker-proxy/docker.sock",
        },
        volumes=[
            f"{dep.secrets_dir}:/run/secrets:ro",
            f"{dep.home / 'dagster.yaml'}:/opt/dagster/dagster_home/dagster.yaml:ro",
            f"{dep.workspace}:/opt/dagster/app/test-workspace.yaml:ro",
            f"{dep.socket_dir / 'webserver'}:/run/docker-proxy",
        ],
        labels={label_key: label_value, "agentforge/role": "webserver"},
        read_only=True,
        tmpfs={
            "/tmp": "rw,size=256m",
            "/opt/dagster/dagster_home": "rw,size=16m,uid=10001,gid=10001",
        },
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )


@dataclass
class FrontDoor:
    port: int
    tls: ssl.SSLContext
    state: Path
    container: Any
    webservers: list[Any]

    def request(
        self,
        path: str = "/",
        auth: tuple[str, str] | None = None,
        body: dict[str, Any] | None = None,
        source: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request to the front door, from ``source`` (any address of 127/8)."""
        sent = {**(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        if auth is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        connection = http.client.HTTPSConnection(
            "localhost", self.port, context=self.tls, timeout=30, source_address=(source, 0)
        )
        try:
            connection.request(
                "POST" if body is not None else "GET",
                path,
                body=json.dumps(body).encode() if body is not None else None,
                headers=sent,
            )
            answer = connection.getresponse()
            return answer.status, dict(answer.headers), answer.read()
        finally:
            connection.close()

    def graphql(
        self, query: str, auth: tuple[str, str] | None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        status, _, body = self.request("/graphql", auth, {"query": query}, headers=headers)
        assert status == 200, body[:500]
        return dict(json.loads(body))

    def session(self, who: tuple[str, str]) -> str:
        """Log in with the password; the session cookie the front door sets (name=value)."""
        status, headers, _ = self.request("/server_info", who)
        assert status in (200, 204), status
        return _session_cookie(headers)


def _session_cookie(headers: dict[str, str]) -> str:
    cookie = headers.get("Set-Cookie", "")
    assert cookie.startswith(f"{SESSION}="), headers
    attributes = {part.strip().split("=")[0] for part in cookie.split(";")[1:]}
    assert {"Path", "Max-Age", "Secure", "HttpOnly", "SameSite"} <= attributes, cookie
    assert "SameSite=Strict" in cookie
    return cookie.split(";")[0]


@pytest.fixture(scope="module")
def front_door(
    docker_deployment: DockerDeployment, proxy_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrontDoor]:
    dep = docker_deployment
    ui_port, read_only_port, door_port = _free_port(), _free_port(), _free_port()
    webservers = [
        start_webserver(dep, ui_port, read_only=False),
        start_webserver(dep, read_only_port, read_only=True),
    ]
    folder = tmp_path_factory.mktemp("front_door")
    container = start_front_door(
        dep,
        proxy_image,
        folder,
        f"0.0.0.0:{door_port}",
        f"127.0.0.1:{ui_port}",
        f"127.0.0.1:{read_only_port}",
    )
    cert = folder / "state" / "tls" / "cert.pem"
    wait_until(cert.exists, 30, "the front door's self-signed certificate")
    door = FrontDoor(
        door_port, ssl.create_default_context(cafile=str(cert)), folder, container, webservers
    )

    def answering(credential: tuple[str, str]) -> bool:
        try:
            return door.request("/server_info", credential)[0] == 200
        except OSError:
            return False

    start = time.monotonic()
    for credential in (OPERATOR, VIEWER):
        wait_until(lambda c=credential: answering(c), 120, f"the webserver behind {credential[0]}")
    print(f"\nfront door up in {time.monotonic() - start:.1f} s")
    yield door
    for started in (container, *webservers):
        started.remove(force=True)


def test_only_the_right_password_gets_in_to_the_ui_and_its_graphql(front_door: FrontDoor) -> None:
    status, headers, _ = front_door.request("/")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert front_door.request("/", (OPERATOR[0], "wrong"))[0] == 401
    assert front_door.request("/graphql", (OPERATOR[0], "wrong"), {"query": "{version}"})[0] == 401
    status, headers, page = front_door.request("/", OPERATOR)
    assert status == 200 and b"<html" in page.lower()
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert front_door.graphql("{ version }", OPERATOR)["data"]["version"]


def test_a_login_gets_a_session_and_the_password_is_checked_once(front_door: FrontDoor) -> None:
    """After basic auth, the signed cookie alone gets in: no bcrypt on every request."""
    operator, viewer = front_door.session(OPERATOR), front_door.session(VIEWER)

    def permissions(cookie: str) -> dict[str, bool]:
        data = front_door.graphql(
            "{ permissions { permission value } }", None, headers={"Cookie": cookie}
        )["data"]
        return {p["permission"]: p["value"] for p in data["permissions"]}

    assert permissions(operator)["launch_pipeline_execution"] is True
    assert permissions(viewer)["launch_pipeline_execution"] is False
    refused = front_door.graphql(LAUNCH, None, headers={"Cookie": viewer})
    assert refused["data"]["launchPipelineExecution"]["__typename"] == "UnauthorizedError"
    # A request on a session gets no new cookie.
    status, headers, _ = front_door.request("/server_info", headers={"Cookie": operator})
    assert status == 200 and "Set-Cookie" not in headers
    # Forged: the viewer's cookie renamed to the operator, a bad signature, an expired one.
    expiry, mac, _ = viewer.split("=", 1)[1].split(".", 2)
    forged = [
        f"{SESSION}={expiry}.{mac}.operator",
        f"{SESSION}={expiry}.{'0' * 64}.viewer",
        f"{SESSION}=1000000000.{mac}.viewer",
        f"{SESSION}=garbage",
    ]
    for cookie in forged:  # from 127.0.0.3: failed logins, and the rate limit counts them
        status = front_door.request("/server_info", source="127.0.0.3", headers={"Cookie": cookie})[
            0
        ]
        assert status == 401, cookie


def _cpu_seconds(container: Any) -> float:
    """CPU time the container has used so far, from its cgroup (v1 or v2), else docker stats."""
    cid = container.id
    for path in (
        f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",
        f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage",
    ):
        if os.path.exists(path):
            return int(Path(path).read_text()) / 1e9
    for path in (
        f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat",
        f"/sys/fs/cgroup/docker/{cid}/cpu.stat",
    ):
        if os.path.exists(path):
            stat = dict(line.split() for line in Path(path).read_text().splitlines())
            return int(stat["usage_usec"]) / 1e6
    stats = container.stats(stream=False)
    return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9


def _first_page_load(door: FrontDoor, who: tuple[str, str], session: bool) -> int:
    """The UI's first page as a browser loads it: the index, every file it names, GraphQL posts.

    Over keep-alive connections (a browser keeps ~6 open), so TLS handshakes are not what is
    measured. A browser sends the password on every request once asked; with ``session`` it
    also sends the cookie it was given, as browsers do. Returns the number of requests.
    """
    connection = http.client.HTTPSConnection("localhost", door.port, context=door.tls, timeout=60)
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(who).encode()).decode()}
    count = 0

    def get(path: str, body: dict[str, Any] | None = None) -> bytes:
        nonlocal count
        sent = {**headers, **({"Content-Type": "application/json"} if body else {})}
        connection.request(
            "POST" if body else "GET", path, json.dumps(body) if body else None, sent
        )
        answer = connection.getresponse()
        content = answer.read()
        count += 1
        assert answer.status == 200, (path, answer.status)
        cookie = answer.headers.get("Set-Cookie")
        if session and cookie:
            headers["Cookie"] = cookie.split(";")[0]
        return content

    try:
        index = get("/").decode()
        files = sorted(set(re.findall(r'(?:src|href)="(/[^"]+)"', index)))
        assert any(f.endswith(".js") for f in files), files
        for path in files:
            get(path)
        queries = ["{ version }", "{ permissions { permission value } }"]
        for number in range(20):  # the overview's queries, then polling
            get("/graphql", {"query": queries[number % 2]})
    finally:
        connection.close()
    return count


def test_the_front_doors_cpu_for_the_uis_first_page_load(front_door: FrontDoor) -> None:
    """bcrypt (cost 10) once per login, not per request: the figure is in docs/security.md."""
    figures = {}
    for session in (False, True):
        before = _cpu_seconds(front_door.container)
        requests = _first_page_load(front_door, OPERATOR, session)
        figures[session] = (_cpu_seconds(front_door.container) - before, requests)
    (basic, requests), (with_session, _) = figures[False], figures[True]
    print(
        f"\nfront door CPU, UI first page load ({requests} requests, bcrypt cost 10): "
        f"password on every request {basic:.2f} s ({basic / requests * 1000:.0f} ms a request), "
        f"with the session cookie {with_session:.3f} s"
    )
    assert with_session < 0.4, figures
    assert with_session < basic / 4, figures


def test_a_viewer_watches_but_cannot_launch_a_run(front_door: FrontDoor) -> None:
    def permissions(who: tuple[str, str]) -> dict[str, bool]:
        data = front_door.graphql("{ permissions { permission value } }", who)["data"]
        return {p["permission"]: p["value"] for p in data["permissions"]}

    assert permissions(OPERATOR)["launch_pipeline_execution"] is True
    assert permissions(VIEWER)["launch_pipeline_execution"] is False
    assert front_door.graphql("{ version }", VIEWER)["data"]["version"]
    refused = front_door.graphql(LAUNCH, VIEWER)
    assert refused["data"]["launchPipelineExecution"]["__typename"] == "UnauthorizedError"


def test_the_uis_websockets_pass_through(front_door: FrontDoor) -> None:
    credential = base64.b64encode(":".join(OPERATOR).encode()).decode()
    raw = socket.create_connection(("127.0.0.1", front_door.port), timeout=10)
    with front_door.tls.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(
            (
                "GET /graphql HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-ws\r\n"
                f"Authorization: Basic {credential}\r\n\r\n"
            ).encode()
        )
        answer = tls.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 101"), answer[:300]
    assert "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in answer, "the webserver's own handshake answer"


def test_failed_logins_are_rate_limited_per_address(front_door: FrontDoor) -> None:
    """From 127.0.0.2, so the other tests' address keeps its allowance."""
    wrong = (OPERATOR[0], "guess")
    answers = [front_door.request("/", wrong, source="127.0.0.2")[0] for _ in range(10)]
    assert answers[0] == 401 and answers[-1] == 429, answers
    assert set(answers) == {401, 429}
    assert front_door.request("/", OPERATOR, source="127.0.0.2")[0] == 200, "right password: in"


def test_the_user_name_goes_upstream_and_the_password_does_not(
    docker_deployment: DockerDeployment, proxy_image: str, tmp_path: Path
) -> None:
    """A second front door in front of a server that echoes what it is sent."""
    seen: list[dict[str, str]] = []

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"port": str(self.server.server_address[1]), **dict(self.headers)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Echo) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    port = _free_port()
    container = start_front_door(
        docker_deployment,
        proxy_image,
        tmp_path,
        f"127.0.0.1:{port}",
        f"127.0.0.1:{servers[0].server_address[1]}",
        f"127.0.0.1:{servers[1].server_address[1]}",
    )
    try:
        cert = tmp_path / "state" / "tls" / "cert.pem"
        wait_until(cert.exists, 30, "the certificate")
        door = FrontDoor(
            port, ssl.create_default_context(cafile=str(cert)), tmp_path, container, []
        )
        wait_until(lambda: _answers(door), 30, "the second front door")
        viewer_session = door.session(VIEWER)
        seen.clear()
        # A client cannot claim to be someone else: its header is replaced.
        for who in (OPERATOR, VIEWER):
            assert door.request("/x", who, headers={"X-Forwarded-User": "mallory"})[0] == 204
        # Nor by a session plus someone else's name in Authorization (unchecked on a session):
        # the session's user counts; the session cookie stays at the front door.
        sent = {"X-Forwarded-User": "mallory", "Cookie": f"a=1; {viewer_session}; b=2"}
        assert door.request("/x", ("operator", "not-checked"), headers=sent)[0] == 204
        # A restart makes a new signing key: every session ends, the password gets in again.
        container.restart()
        wait_until(lambda: _answers(door), 30, "the restarted front door")
        assert door.request("/x", headers={"Cookie": viewer_session})[0] == 401
    finally:
        container.remove(force=True)
        for server in servers:
            server.shutdown()
    operator, viewer, on_session = seen[:3]
    assert operator["X-Forwarded-User"] == "operator" and viewer["X-Forwarded-User"] == "viewer"
    assert on_session["X-Forwarded-User"] == "viewer"
    assert on_session["port"] == str(servers[1].server_address[1]), "a viewer's session: read-only"
    assert on_session["Cookie"] == "a=1; b=2"
    assert operator["port"] == str(servers[0].server_address[1]), "operators: the full UI"
    assert viewer["port"] == str(servers[1].server_address[1]), "viewers: the read-only UI"
    assert not {"Authorization", "authorization"} & (set(operator) | set(viewer) | set(on_session))
    assert operator["X-Forwarded-Proto"] == "https"


def _answers(door: FrontDoor) -> bool:
    try:
        return door.request("/x", OPERATOR)[0] == 204
    except OSError:
        return False


def _descendants(roots: set[int]) -> set[int]:
    children: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), set()).add(int(stat.parent.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def test_nothing_of_the_stack_but_the_front_door_listens_beyond_loopback(
    front_door: FrontDoor, docker_deployment: DockerDeployment
) -> None:
    dep = docker_deployment
    containers = dep.client.containers.list(filters={"label": dep.label})
    roles = {c.labels.get("agentforge/role") for c in containers}
    assert {"front-door", "webserver", "code-server", "socket-proxy"} <= roles
    assert dep.daemon.process.poll() is None, "the daemon runs"
    pids = _descendants({c.attrs["State"]["Pid"] for c in containers} | {dep.daemon.process.pid})
    listening: dict[str, set[int]] = {}
    for line in subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        ours = {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & pids
        if ours:
            listening.setdefault(line.split()[3], set()).update(ours)
    exposed = {
        address
        for address in listening
        if not address.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))
    }
    assert exposed == {f"0.0.0.0:{front_door.port}"}, listening
    code_server = {f"127.0.0.1:{dep.port}", f"[::ffff:127.0.0.1]:{dep.port}"}
    assert code_server & set(listening), "the code server, on loopback (IPv4 or v4-mapped)"
    assert len(listening) >= 4, listening  # front door, two webservers, code server


def test_the_canary_secret_is_nowhere_but_in_its_file(
    front_door: FrontDoor, docker_deployment: DockerDeployment
) -> None:
    """docker inspect of every container, the event log, compute logs, the audit trail, logs."""
    dep = docker_deployment
    assert CANARY in (dep.secrets_dir / "dagster_pg_password").read_text()
    if not dep.inspected:  # this module alone: one order in a run container first
        run_id = dep.launch(dep.orders["canary"])
        dep.wait_container(run_id)
        dep.wait_run(run_id)
    assert dep.inspected, "a run container was inspected while it ran"
    containers = dep.client.containers.list(all=True, filters={"label": dep.label})
    places: dict[str, str] = {f"docker inspect {c.name}": json.dumps(c.attrs) for c in containers}
    places.update(
        {f"docker inspect run {i}": json.dumps(attrs) for i, attrs in enumerate(dep.inspected)}
    )
    places.update(
        {f"docker logs {c.name}": c.logs().decode("utf-8", "replace") for c in containers}
    )
    places["daemon log"] = dep.log.read_text(errors="replace")
    places["audit trail"] = json.dumps(dep.store.audit.audit_rows(), default=str)
    dagster_db = create_engine(
        make_url(PG_ADMIN_URL).set(database=dep.dagster_db).render_as_string(False)
    )
    with dagster_db.connect() as conn:
        places["event log"] = "\n".join(
            conn.execute(text("SELECT event FROM event_logs")).scalars()
        )
        places["runs"] = "\n".join(conn.execute(text("SELECT run_body FROM runs")).scalars())
    dagster_db.dispose()
    s3 = boto3.client(
        "s3", endpoint_url=dep.env["AGENTFORGE_S3_ENDPOINT_URL"], region_name="us-east-1"
    )
    objects = s3.list_objects_v2(Bucket=dep.bucket).get("Contents", [])
    assert any(o["Key"].startswith("compute-logs/") for o in objects), "compute logs were kept"
    for item in objects:
        body = s3.get_object(Bucket=dep.bucket, Key=item["Key"])["Body"].read()
        places[f"s3 {item['Key']}"] = body.decode("utf-8", "replace")
    assert len(places["event log"]) > 1000 and len(places["daemon log"]) > 100
    leaks = [place for place, content in places.items() if CANARY in content]
    assert leaks == [], f"the canary secret leaked into: {leaks}"
    for link in dep.links:  # presigned links: printed, never stored
        signature = re.search(r"Signature=([^&]+)", link)
        assert signature is not None
        assert not [p for p, content in places.items() if signature.group(1) in content]
