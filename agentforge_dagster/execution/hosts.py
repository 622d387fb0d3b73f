"""Do the hosts this process is configured to reach resolve here? Checked before it starts work.

A deployment names its services (``postgres``, ``minio``) in settings; a process that cannot
resolve one of them fails much later and far from the cause (a run container used to end as a
bare ``START_TIMEOUT`` after 180 s). So the daemon and every run container check the names first
and stop at once with a message naming the host and the setting it came from.

``python -m agentforge_dagster.execution.hosts [--then COMMAND ...]`` checks, then runs COMMAND
in its place (``exec``). Only host names and setting names are printed: a URL may hold a password.

Also here: the host entries of this process's ``/etc/hosts`` that Docker's own defaults do not
explain (the ``extra_hosts`` of a compose service), which the run launcher copies into run
containers so they resolve what the service resolves, from the one list in ``compose.yaml``.

Imports nothing beyond the standard library: it runs before every run worker.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

# Settings that name a host: a bare host name, or a URL whose host is the part that matters.
HOST_SETTINGS = ("DAGSTER_PG_HOST",)
URL_SETTINGS = (
    "AGENTFORGE_DATABASE_URL",
    "AGENTFORGE_S3_ENDPOINT_URL",
    "AGENTFORGE_RABBITMQ_URL",
    "AGENTFORGE_REDIS_URL",
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
)
# Names Docker writes into every container's /etc/hosts: not the operator's entries.
_DOCKER_DEFAULT_NAMES = frozenset(
    {
        "localhost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
    }
)
EXIT_UNRESOLVED = 68  # EX_NOHOST


def configured_hosts(env: Mapping[str, str]) -> dict[str, str]:
    """host name → the setting that names it, for every set host setting of ``env``."""
    hosts: dict[str, str] = {}
    for name in HOST_SETTINGS:
        value = env.get(name, "").strip()
        if value:
            hosts.setdefault(value, name)
    for name in URL_SETTINGS:
        value = env.get(name, "").strip()
        if not value:
            continue
        try:
            host = urlsplit(value).hostname
        except ValueError:
            continue  # not a URL: the setting's own validation says so, with its name
        if host:
            hosts.setdefault(host, name)
    return hosts


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def unresolved(hosts: Mapping[str, str]) -> list[str]:
    """One line per host that does not resolve: ``host 'postgres' (DAGSTER_PG_HOST): reason``."""
    problems = []
    for host, setting in sorted(hosts.items()):
        if _is_address(host):
            continue
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror as exc:
            problems.append(f"host {host!r} ({setting}) does not resolve: {exc.strerror}")
    return problems


def host_entries(hosts_file: Path = Path("/etc/hosts")) -> dict[str, str]:
    """name → address of the entries of ``hosts_file`` that Docker's defaults do not explain.

    In a container these are its service's ``extra_hosts`` (and, on a plain host, the host's own
    names, which are harmless to repeat). The first address of a name wins, as in the resolver.
    """
    entries: dict[str, str] = {}
    try:
        lines = hosts_file.read_text().splitlines()
    except OSError:
        return entries
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or not _is_address(fields[0]):
            continue
        for name in fields[1:]:
            if name not in _DOCKER_DEFAULT_NAMES and name != socket.gethostname():
                entries.setdefault(name, fields[0])
    return entries


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    then: list[str] = []
    if "--then" in args:
        at = args.index("--then")
        args, then = args[:at], args[at + 1 :]
    what = args[0] if args else (then[0] if then else "this process")
    hosts = configured_hosts(os.environ)
    problems = unresolved(hosts)
    if problems:
        print(
            f"{what}: fix the name (compose: the daemon's extra_hosts, which run containers "
            "copy) or the setting, then start again",
            file=sys.stderr,
        )
        # Last, so that whoever reads only a dead process's last line reads the host's name.
        for problem in problems:
            print(f"{what}: {problem}", file=sys.stderr)
        return EXIT_UNRESOLVED
    if then:
        sys.stdout.flush()
        os.execvp(then[0], then)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
