#!/usr/bin/env bash
# Make (or rotate) the deployment's secret files and the front door's password files. As root:
# `sudo bash docker/make-secrets.sh ...`, or `bash docker/make-secrets.sh ...` in a root shell.
#
#   sudo bash docker/make-secrets.sh [DIR]                  # random passwords, once (init)
#   sudo bash docker/make-secrets.sh [DIR] rotate           # new database + S3 passwords
#   OPENAI_API_KEY=sk-... sudo -E bash docker/make-secrets.sh [DIR] key   # (re)place the model keys
#   AGENTFORGE_RABBITMQ_URL=amqp://... sudo -E bash docker/make-secrets.sh [DIR] broker  # broker URLs
#   OTEL_EXPORTER_OTLP_HEADERS='Authorization=Basic ...' sudo -E bash docker/make-secrets.sh [DIR] otel  # traces' headers
#   sudo bash docker/make-secrets.sh [DIR] user NAME [viewer]   # add/replace a UI login (prompts)
#   printf '%s\n' "$pw" | sudo bash docker/make-secrets.sh [DIR] user NAME [viewer] --password-stdin
#
# Settings come from the same docker/.env that docker-compose reads (ENV_FILE=... for another
# file), with compose.yaml's defaults: DAGSTER_PG_USERNAME [agentforge], DAGSTER_PG_HOST
# [postgres], DAGSTER_PG_PORT [5432], AGENTFORGE_DB [agentforge] (baked into
# agentforge_database_url), AGENTFORGE_SECRETS_DIR (DIR when it is not given) and PROXY_IMAGE
# (its htpasswd makes the logins). As with compose, a variable of the environment this script
# runs in wins over the file: plain `sudo` passes none through, so .env decides; `sudo -E` (or a
# root shell) lets an exported one win. The file is parsed, never run: KEY=VALUE lines, optional
# `export `, '...' or "..." quotes, # comments; no ${...} expansion.
#
# One file per variable, named in lower case (dagster_pg_password, agentforge_database_url,
# aws_secret_access_key, openai_api_key, anthropic_api_key, agentforge_rabbitmq_url,
# agentforge_redis_url), owned by uid 10001 (the project image's user), mode 0400; the PostgreSQL
# and MinIO entrypoints read them as root before dropping privileges.
# UI logins: DIR/front-door/operators.htpasswd (the full UI) and viewers.htpasswd (the read-only
# UI), bcrypt of cost BCRYPT_COST [10] made by the proxy image's htpasswd, owned by uid 10002 (the
# proxy's user), mode 0400. A login is in one of the two files only: making NAME a viewer removes
# it from the operators and the other way round. The password is asked twice on a terminal;
# otherwise (or with --password-stdin) it is the first line of standard input.
set -euo pipefail

usage="usage: make-secrets.sh [DIR] [init|rotate|key|broker|otel|user NAME [viewer|operator] [--password-stdin]]"
SCRIPT_DIR=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
ENV_FILE="${ENV_FILE:-$SCRIPT_DIR/.env}"
die() { echo "make-secrets: $*" >&2; exit 1; }

# --- settings: the environment, else ENV_FILE, else compose.yaml's default -----------------------
declare -A DOTENV=()
read_env_file() {  # KEY=VALUE lines of compose's .env format into DOTENV; nothing is executed
    local line key value number=0
    while IFS= read -r line || [[ -n "$line" ]]; do
        number=$((number + 1))
        line="${line%$'\r'}"
        line="${line#"${line%%[![:space:]]*}"}"  # leading blanks
        [[ -z "$line" || "$line" == \#* ]] && continue
        [[ "$line" =~ ^export[[:space:]]+(.*)$ ]] && line="${BASH_REMATCH[1]}"
        if ! [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_.]*)[[:space:]]*=[[:space:]]*(.*)$ ]]; then
            echo "make-secrets: $ENV_FILE:$number: not KEY=VALUE, ignored" >&2
            continue
        fi
        key="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
        if [[ "$value" =~ ^\'([^\']*)\'[[:space:]]*(#.*)?$ ]]; then
            value="${BASH_REMATCH[1]}"
        elif [[ "$value" =~ ^\"(([^\"\\]|\\.)*)\"[[:space:]]*(#.*)?$ ]]; then
            value="${BASH_REMATCH[1]}"
            value="${value//\\\"/\"}"
            value="${value//\\\\/\\}"
        else
            [[ "$value" =~ ^(.*[^[:space:]])?[[:space:]]+#.*$ ]] && value="${BASH_REMATCH[1]}"
            [[ "$value" == \#* ]] && value=""
            value="${value%"${value##*[![:space:]]}"}"  # trailing blanks
        fi
        DOTENV[$key]="$value"
    done <"$ENV_FILE"
}
[[ -f "$ENV_FILE" ]] && read_env_file
setting() {  # setting NAME DEFAULT: as compose's ${NAME:-DEFAULT}, the environment before the file
    local value
    if [[ -n "${!1+set}" ]]; then value="${!1}"; else value="${DOTENV[$1]:-}"; fi
    printf '%s' "${value:-$2}"
}
PG_USER=$(setting DAGSTER_PG_USERNAME agentforge)
PG_HOST=$(setting DAGSTER_PG_HOST postgres)
PG_PORT=$(setting DAGSTER_PG_PORT 5432)
BUSINESS_DB=$(setting AGENTFORGE_DB agentforge)
BCRYPT_COST="${BCRYPT_COST:-10}"

# --- arguments: DIR is optional (AGENTFORGE_SECRETS_DIR), then the action -------------------------
case "${1:-}" in
init | rotate | key | broker | otel | user | "") DIR=$(setting AGENTFORGE_SECRETS_DIR "") ;;
*) DIR="$1"; shift ;;
esac
[[ -n "$DIR" ]] || die "no DIR given and no AGENTFORGE_SECRETS_DIR in the environment or $ENV_FILE; $usage"
ACTION="${1:-init}"
[[ $EUID -eq 0 ]] || die "run as root (sudo bash $0 ..., or bash $0 ... as root): the files are chowned to uids 10001/10002"

random() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-32; }
put() {  # put NAME VALUE: write atomically, owner 10001, mode 0400
    local tmp
    tmp=$(umask 077 && mktemp "$DIR/.$1.XXXXXX")
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
    # They go into a URL unescaped: refuse what would change its meaning.
    for part in "DAGSTER_PG_USERNAME=$PG_USER" "DAGSTER_PG_HOST=$PG_HOST" "AGENTFORGE_DB=$BUSINESS_DB"; do
        [[ "${part#*=}" =~ ^[A-Za-z0-9._-]+$ ]] || die "${part%%=*}: letters, digits and . _ - only (got '${part#*=}')"
    done
    [[ "$PG_PORT" =~ ^[0-9]+$ ]] || die "DAGSTER_PG_PORT: a number (got '$PG_PORT')"
    pg=$(random)
    put dagster_pg_password "$pg"
    put agentforge_database_url "postgresql+psycopg2://$PG_USER:$pg@$PG_HOST:$PG_PORT/$BUSINESS_DB"
    put aws_secret_access_key "$(random)"
    echo "wrote $DIR: new PostgreSQL and S3 passwords; business database $PG_USER@$PG_HOST:$PG_PORT/$BUSINESS_DB (see README, Security: rotating)" >&2
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
otel)
    [[ -n "${OTEL_EXPORTER_OTLP_HEADERS:-}" ]] || die "set OTEL_EXPORTER_OTLP_HEADERS (key=value,key=value) and pass it with sudo -E"
    put otel_exporter_otlp_headers "$OTEL_EXPORTER_OTLP_HEADERS"
    echo "traces' collector headers written; restart the services (each reads them at start)" >&2
    ;;
user)
    shift
    from_stdin=no
    args=()
    for arg in "$@"; do
        if [[ "$arg" == --password-stdin ]]; then from_stdin=yes; else args+=("$arg"); fi
    done
    name="${args[0]:-}"
    role="${args[1]:-operator}"
    [[ -n "$name" ]] || die "user NAME [viewer|operator] [--password-stdin]"
    [[ "$name" =~ ^[A-Za-z0-9_.@-]+$ ]] || die "user name '$name': letters, digits and _ . @ - only"
    [[ "$role" =~ ^(operator|viewer)$ ]] || die "role: operator or viewer, not '$role'"
    [[ "$BCRYPT_COST" =~ ^[0-9]+$ ]] && ((BCRYPT_COST >= 10 && BCRYPT_COST <= 17)) ||
        die "BCRYPT_COST: 10 to 17 (got '$BCRYPT_COST')"
    proxy_image=$(setting PROXY_IMAGE "")
    [[ -n "$proxy_image" ]] || die "set PROXY_IMAGE (in $ENV_FILE, or the environment): its htpasswd makes the login"
    if [[ "$from_stdin" == no && -t 0 ]]; then
        read -r -s -p "password for $name: " password && echo >&2
        read -r -s -p "again: " again && echo >&2
        [[ "$password" == "$again" ]] || die "the two passwords differ"
    else
        IFS= read -r password || [[ -n "${password:-}" ]] || die "no password on standard input"
        password="${password%$'\r'}"
    fi
    [[ -n "$password" ]] || die "empty password"
    # The password goes to htpasswd on its standard input, never on a command line.
    line=$(docker run --rm -i --network none --entrypoint htpasswd "$proxy_image" \
        -inB -C "$BCRYPT_COST" "$name" <<<"$password")
    [[ "$line" == "$name:\$2"* ]] || die "htpasswd gave no bcrypt line for $name"
    folder="$DIR/front-door"
    mkdir -p "$folder"
    for file in operators viewers; do
        path="$folder/$file.htpasswd"
        tmp=$(umask 077 && mktemp "$folder/.$file.XXXXXX")
        if [[ -e "$path" ]]; then
            awk -F: -v name="$name" '$1 != name' "$path" >"$tmp"
        fi
        [[ "$file" == "${role}s" ]] && printf '%s\n' "$line" >>"$tmp"
        mv -f "$tmp" "$path"
    done
    chown -R 10002:10002 "$folder"
    chmod 0500 "$folder"
    chmod 0400 "$folder"/*.htpasswd
    echo "$name can log in as $role (bcrypt cost $BCRYPT_COST); restart the front door (docker-compose restart front_door)" >&2
    ;;
*)
    die "unknown action $ACTION; $usage"
    ;;
esac
