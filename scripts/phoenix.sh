#!/usr/bin/env bash
# make traces: Phoenix, a trace viewer for the project's traces (docs/traces.md), on this machine.
#
# Phoenix cannot share the project's environment (it pins an older anthropic, and pip would
# quietly backtrack to an old Phoenix), so it gets its own venv, made once: $PHOENIX_VENV
# [.venv-phoenix]. It runs offline and locked down: the UI and its OTLP/HTTP endpoint on
# 127.0.0.1:$PHOENIX_PORT [6006] only, authentication always on (its secrets made like the
# stack's: random, 0600, in $PHOENIX_HOME [.agentforge/phoenix]), no telemetry, no external
# resources, the agent assistant and its bash off. Its OTLP/gRPC port listens on every interface
# whatever PHOENIX_HOST says: it is moved to $PHOENIX_GRPC_PORT [4317]; keep that port closed
# to other machines with the host's firewall (docs/traces.md says how).
#
#   make traces              # start it in the foreground (Ctrl-C stops it)
#   make traces ARGS=--env   # print the variables that point the project at it, and exit
#   bash scripts/phoenix.sh --venv-only   # make the venv only (make test-traces)
set -euo pipefail
cd "$(dirname "$0")/.."

PHOENIX_VERSION="${PHOENIX_VERSION:-20.26.1}"
PHOENIX_VENV="${PHOENIX_VENV:-.venv-phoenix}"
PHOENIX_HOME="${PHOENIX_HOME:-.agentforge/phoenix}"
PORT="${PHOENIX_PORT:-6006}"
GRPC_PORT="${PHOENIX_GRPC_PORT:-4317}"

if [[ ! -x "$PHOENIX_VENV/bin/phoenix" ]]; then
    echo "making $PHOENIX_VENV (arize-phoenix $PHOENIX_VERSION, once)" >&2
    python3 -m venv "$PHOENIX_VENV"
    "$PHOENIX_VENV/bin/pip" install --quiet --upgrade pip
    "$PHOENIX_VENV/bin/pip" install --quiet "arize-phoenix==$PHOENIX_VERSION"
fi

[[ "${1:-}" == "--venv-only" ]] && exit 0

mkdir -p "$PHOENIX_HOME"
chmod 0700 "$PHOENIX_HOME"
secret() {  # secret NAME: the file's value, made once (32 random lower-case letters and digits)
    local file="$PHOENIX_HOME/$1"
    if [[ ! -s "$file" ]]; then
        (umask 077 && python3 -c 'import secrets; print("a1" + secrets.token_hex(24))' >"$file")
    fi
    cat "$file"
}
SECRET=$(secret jwt_secret)
ADMIN_SECRET=$(secret admin_secret)

if [[ "${1:-}" == "--env" ]]; then
    cat <<ENV
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$PORT
export OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer $ADMIN_SECRET'
export AGENTFORGE_TRACE_URL='http://127.0.0.1:$PORT/redirects/traces/{trace_id}'
ENV
    exit 0
fi

echo "Phoenix on http://127.0.0.1:$PORT (log in as admin; the first password is printed by Phoenix)." >&2
echo "Point the project at it: eval \"\$(make -s traces ARGS=--env)\"" >&2
exec env \
    PHOENIX_HOST=127.0.0.1 \
    PHOENIX_PORT="$PORT" \
    PHOENIX_GRPC_PORT="$GRPC_PORT" \
    PHOENIX_WORKING_DIR="$PWD/$PHOENIX_HOME" \
    PHOENIX_ENABLE_AUTH=true \
    PHOENIX_SECRET="$SECRET" \
    PHOENIX_ADMIN_SECRET="$ADMIN_SECRET" \
    PHOENIX_TELEMETRY_ENABLED=false \
    PHOENIX_ALLOW_EXTERNAL_RESOURCES=false \
    PHOENIX_DISABLE_AGENT_ASSISTANT=true \
    PHOENIX_AGENTS_DISABLE_BASH=true \
    "$PHOENIX_VENV/bin/phoenix" serve
