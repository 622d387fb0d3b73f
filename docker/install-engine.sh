#!/usr/bin/env bash
# Install (if missing) and start (if not answering) a Docker engine on this kind of machine.
#
# Idempotent: safe to run on a fresh CI machine and again on one where dockerd already runs.
# The machine has no network but the package registries, so the daemon runs without a bridge,
# NAT or iptables rules; every container must use `--network host`.
#
#   bash docker/install-engine.sh          # installs docker.io + debootstrap, starts dockerd
#   WITH_COMPOSE=1 bash docker/install-engine.sh   # also docker-compose (1.29, Debian's package;
#                                                  # bookworm has no compose v2 plugin)
#   DOCKERD_LOG=/tmp/d.log bash docker/install-engine.sh
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
WAIT_SECONDS="${DOCKERD_WAIT_SECONDS:-60}"

log() { echo "[install-engine] $*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
if [[ "${WITH_COMPOSE:-0}" == 1 ]]; then
    command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 ||
        need_pkgs+=(docker-compose)
fi

if ((${#need_pkgs[@]})); then
    log "installing: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends keeps out cgroupfs-mount, git, xz-utils' friends, etc.;
    # docker.io still pulls containerd, runc and tini which dockerd needs.
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
else
    log "docker.io and debootstrap already installed"
fi

# /usr/local/bin/docker (a newer static client) may shadow Debian's /usr/bin/docker; either
# client talks to the daemon (API version is negotiated).
command -v docker >/dev/null 2>&1 || { log "no docker client on PATH"; exit 1; }

if docker info >/dev/null 2>&1; then
    log "dockerd already answering"
    exit 0
fi

if [[ -f /var/run/docker.pid ]] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    log "dockerd (pid $(cat /var/run/docker.pid)) exists but does not answer yet; waiting for it"
else
    log "starting dockerd (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # A stale pid file from a killed daemon makes dockerd refuse to start.
    rm -f /var/run/docker.pid
    # setsid + nohup: the daemon outlives this script and the shell that ran it.
    setsid nohup dockerd \
        --bridge=none \
        --iptables=false \
        --ip-masq=false \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
fi

deadline=$((SECONDS + WAIT_SECONDS))
until docker info >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        log "dockerd did not answer within ${WAIT_SECONDS}s; last log lines:"
        tail -n 40 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    sleep 1
done
log "dockerd is up: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}' 2>/dev/null || echo '?')"
