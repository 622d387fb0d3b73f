#!/usr/bin/env bash
# Make (or rotate) the deployment's secret files and the front door's password files.
#
#   sudo bash docker/make-secrets.sh /etc/agentforge/secrets            # random passwords, once
#   sudo bash docker/make-secrets.sh /etc/agentforge/secrets rotate     # new database + S3 passwords
#   OPENAI_API_KEY=sk-... sudo -E bash docker/make-secrets.sh DIR key   # (re)place the model keys
#   AGENTFORGE_RABBITMQ_URL=amqp://... sudo -E bash docker/make-secrets.sh DIR broker  # broker URLs
#   sudo bash docker/make-secrets.sh DIR user NAME [viewer]             # add/replace a UI login
#
# One file per variable, named in lower case (dagster_pg_password, agentforge_database_url,
# aws_secret_access_key, openai_api_key, anthropic_api_key, agentforge_rabbitmq_url,
# agentforge_redis_url), owned by uid 10001 (the project
# image's user) and readable by it only; the PostgreSQL and MinIO entrypoints read them as root
# before dropping privileges. The folder is AGENTFORGE_SECRETS_DIR in docker/.env.
# UI logins: DIR/front-door/operators.htpasswd and viewers.htpasswd (bcrypt, htpasswd -B, made
# with the proxy image's htpasswd: PROXY_IMAGE must be set), owned by uid 10002 (the proxy's user).
set -euo pipefail

DIR="${1:?usage: make-secrets.sh DIR [init|rotate|key|broker|user NAME [viewer]]}"
ACTION="${2:-init}"
PG_USER="${DAGSTER_PG_USERNAME:-agentforge}"
PG_HOST="${DAGSTER_PG_HOST:-postgres}"
PG_PORT="${DAGSTER_PG_PORT:-5432}"
BUSINESS_DB="${AGENTFORGE_DB:-agentforge}"

random() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-32; }
put() {  # put NAME VALUE: write atomically, owner 10001, mode 0400
    local tmp
    tmp=$(mktemp "$DIR/.$1.XXXXXX")
    printf '%s\n' "$2" >"$tmp"
    chown 10001:10001 "$tmp"
    chmod 0400 "$tmp"
    mv -f "$tmp" "$DIR/$1"
}

mkdir -p "$DIR"
chown 10001:10001 "$DIR"
chmod 0500 "$DIR"

case "$ACTION" in
init | rotate)
    if [[ "$ACTION" == init && -e "$DIR/dagster_pg_password" ]]; then
        echo "$DIR already holds secrets; use 'rotate' to replace them" >&2
        exit 1
    fi
    pg=$(random)
    put dagster_pg_password "$pg"
    put agentforge_database_url "postgresql+psycopg2://$PG_USER:$pg@$PG_HOST:$PG_PORT/$BUSINESS_DB"
    put aws_secret_access_key "$(random)"
    echo "wrote $DIR: new PostgreSQL and S3 passwords (see README, Security: rotating)" >&2
    ;;
key)
    [[ -n "${OPENAI_API_KEY:-}" ]] && put openai_api_key "$OPENAI_API_KEY"
    [[ -n "${ANTHROPIC_API_KEY:-}" ]] && put anthropic_api_key "$ANTHROPIC_API_KEY"
    echo "model keys written; new runs read them at once, the code server at its next start" >&2
    ;;
broker)
    [[ -n "${AGENTFORGE_RABBITMQ_URL:-}" ]] && put agentforge_rabbitmq_url "$AGENTFORGE_RABBITMQ_URL"
    [[ -n "${AGENTFORGE_REDIS_URL:-}" ]] && put agentforge_redis_url "$AGENTFORGE_REDIS_URL"
    echo "broker URLs written; restart user_code (its sensors read them at start)" >&2
    ;;
user)
    name="${3:?user NAME [viewer]}"
    file="$DIR/front-door/${4:-operator}s.htpasswd"
    [[ "${4:-operator}" =~ ^(operator|viewer)$ ]] || { echo "role: operator or viewer" >&2; exit 1; }
    mkdir -p "$DIR/front-door"
    touch "$file"
    read -r -s -p "password for $name: " password && echo >&2
    line=$(docker run --rm -i --network none --entrypoint htpasswd "${PROXY_IMAGE:?set PROXY_IMAGE}" \
        -inB "$name" <<<"$password")
    { grep -v "^$name:" "$file" || true; echo "$line"; } >"$file.new"
    mv -f "$file.new" "$file"
    chown -R 10002:10002 "$DIR/front-door"
    chmod 0500 "$DIR/front-door"
    chmod 0400 "$DIR/front-door"/*.htpasswd
    echo "$name can log in as ${4:-operator}; restart the front door (docker-compose restart front_door)" >&2
    ;;
*)
    echo "unknown action $ACTION" >&2
    exit 1
    ;;
esac
