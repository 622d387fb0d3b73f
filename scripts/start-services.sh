#!/usr/bin/env bash
# Start what the test suite needs and is not started by the machine: idempotent, quick when all runs.
#   PostgreSQL on 127.0.0.1:5432 (trust auth for the postgres user), with pg_dump/pg_restore.
#   A Docker engine (docker/install-engine.sh: installs docker.io, debootstrap and docker-compose
#   if missing, starts dockerd --bridge=none --iptables=false --ip-masq=false) and the local base
#   image agentforge-base:bookworm (built once per machine, ~60 s; then it exists and is reused).
# The S3 server (moto) is started by the test fixtures themselves; the project images are built by
# the Docker tests (docker/build-image.sh, from Docker's layer cache after the first build).
set -euo pipefail

if ! command -v pg_dump >/dev/null || ! command -v pg_isready >/dev/null; then
  echo "PostgreSQL client tools missing: apt-get install postgresql-client" >&2
  exit 1
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

cd "$(dirname "$0")/.."
WITH_COMPOSE=1 bash docker/install-engine.sh
bash docker/build-base-image.sh
