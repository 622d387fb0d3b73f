#!/usr/bin/env bash
# Set KEY=VALUE pairs in docker/.env (the file docker-compose and make-secrets.sh read): a key
# already there is replaced in place, a new one appended; comments and other lines are kept.
#
#   bash docker/set-env.sh AGENTFORGE_IMAGE=agentforge:0.1.0-abc1234 PROXY_IMAGE=...
#   ENV_FILE=/elsewhere/.env bash docker/set-env.sh KEY=VALUE
set -euo pipefail

ENV_FILE="${ENV_FILE:-$(dirname "$0")/.env}"
[[ -f "$ENV_FILE" ]] || { echo "no $ENV_FILE: cp docker/compose.env.example docker/.env first" >&2; exit 1; }
for pair in "$@"; do
    [[ "$pair" =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] || { echo "not KEY=VALUE: $pair" >&2; exit 2; }
    [[ "$pair" != *$'\n'* ]] || { echo "a value holds a newline: ${pair%%=*}" >&2; exit 2; }
    key="${pair%%=*}"
    tmp=$(mktemp "$ENV_FILE.XXXXXX")
    awk -v key="$key" -v line="$pair" '
        index($0, key "=") == 1 { if (!done) print line; done = 1; next }
        { print }
        END { if (!done) print line }
    ' "$ENV_FILE" >"$tmp"
    chmod --reference="$ENV_FILE" "$tmp"
    mv -f "$tmp" "$ENV_FILE"
    echo "docker/.env: $key set" >&2
done
