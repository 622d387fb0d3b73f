#!/usr/bin/env bash
# Start what the test suite needs and is not started by the machine: idempotent, quick when all runs.
#   PostgreSQL on 127.0.0.1:5432 (trust auth for the postgres user), with pg_dump/pg_restore.
#   Redis on 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (its guest user), with rabbitmqctl.
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

# Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672, guest/guest) for the broker tests. The
# tests make their own vhosts, databases and (to restart one) redis-servers inside them.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! listening 6379; then
  command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install redis-server" >&2; exit 1; }
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379
  for _ in $(seq 1 30); do listening 6379 && break; sleep 0.5; done
fi
listening 6379 || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
if ! listening 5672; then
  command -v rabbitmq-server >/dev/null || { echo "rabbitmq-server missing: apt-get install rabbitmq-server" >&2; exit 1; }
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 rabbitmq-server -detached
  rabbitmqctl await_startup --timeout 120 >/dev/null
fi
listening 5672 || { echo "RabbitMQ did not start on 127.0.0.1:5672" >&2; exit 1; }

cd "$(dirname "$0")/.."
WITH_COMPOSE=1 bash docker/install-engine.sh
bash docker/build-base-image.sh
