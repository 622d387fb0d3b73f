#!/usr/bin/env bash
# Entrypoint of the local postgres:15 stand-in (docker/build-standins.sh). It follows the official
# image's docker-entrypoint.sh: `postgres ARGS...` (or just flags) sets the server up, anything
# else is exec'd as is.
#
#   As root: POSTGRES_PASSWORD / POSTGRES_USER / POSTGRES_DB / POSTGRES_INITDB_ARGS, each or its
#   NAME_FILE, are read (a secret file may be root-only), PGDATA and /var/run/postgresql are
#   chowned to postgres, and the script runs itself again as postgres (setpriv).
#   On an empty PGDATA (no PG_VERSION): initdb with that user and password, `host all all all
#   <password_encryption>` appended to pg_hba.conf (POSTGRES_HOST_AUTH_METHOD overrides it), a
#   server on the unix socket only, POSTGRES_DB created, /docker-entrypoint-initdb.d/* run
#   (*.sh executed if executable, else sourced; *.sql, *.sql.gz through psql), the server stopped.
#   Then `postgres ARGS...` is exec'd as postgres.
#
# One difference from the official image, on purpose: unless POSTGRES_INITDB_ARGS picks the
# methods itself, initdb gets --auth-host=scram-sha-256 --auth-local=trust. The official image
# leaves initdb's default, which trusts TCP connections from 127.0.0.1 and ::1 without a password;
# with network_mode: host that is every process of the host. Setting POSTGRES_INITDB_ARGS=
# --auth-host=scram-sha-256 makes the official image behave like this one.
set -Eeuo pipefail

INITDB_DIR=/docker-entrypoint-initdb.d
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

log() { printf '%s: %s\n' "$(basename "$0")" "$*"; }

# NAME from NAME or from the file NAME_FILE names (not both), default $2; exported.
file_env() {
    local var=$1 file_var="${1}_FILE" value=${2:-}
    if [[ -n "${!var:-}" && -n "${!file_var:-}" ]]; then
        log "error: both $var and $file_var are set (but are exclusive)" >&2
        exit 1
    fi
    if [[ -n "${!var:-}" ]]; then
        value=${!var}
    elif [[ -n "${!file_var:-}" ]]; then
        value=$(<"${!file_var}")
    fi
    export "$var"="$value"
    unset "$file_var"
}

setup_env() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=}"
    DATABASE_ALREADY_EXISTS=
    if [[ -s "$PGDATA/PG_VERSION" ]]; then
        DATABASE_ALREADY_EXISTS=true
    fi
}

create_directories() {
    mkdir -p "$PGDATA"
    chmod 00700 "$PGDATA" || :
    mkdir -p /var/run/postgresql || :
    chmod 03775 /var/run/postgresql || :
    if [[ -n "${POSTGRES_INITDB_WALDIR:-}" ]]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        [[ "$(id -u)" == 0 ]] && find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
        chmod 700 "$POSTGRES_INITDB_WALDIR"
    fi
    if [[ "$(id -u)" == 0 ]]; then
        find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
        find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
    fi
}

verify_minimum_env() {
    if [[ -z "$POSTGRES_PASSWORD" && "$POSTGRES_HOST_AUTH_METHOD" != trust ]]; then
        log "error: database is uninitialized and superuser password is not specified:" \
            "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (or POSTGRES_HOST_AUTH_METHOD=trust," \
            "not recommended)" >&2
        exit 1
    fi
    if [[ "$POSTGRES_HOST_AUTH_METHOD" == trust ]]; then
        log "WARNING: POSTGRES_HOST_AUTH_METHOD=trust: every TCP client gets in without a password" >&2
    fi
}

init_database_dir() {
    local auth=()
    # The authentication methods, unless POSTGRES_INITDB_ARGS chooses them (see the header).
    if [[ " $POSTGRES_INITDB_ARGS" != *" --auth"* && " $POSTGRES_INITDB_ARGS" != *" -A"* ]]; then
        auth=(--auth-host=scram-sha-256 --auth-local=trust)
    fi
    if [[ -n "${POSTGRES_INITDB_WALDIR:-}" ]]; then
        auth+=(--waldir "$POSTGRES_INITDB_WALDIR")
    fi
    # POSTGRES_INITDB_ARGS is split like a shell would (as the official image does); --pwfile
    # refuses an empty file, hence the newline.
    eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") "${auth[@]}" '"$POSTGRES_INITDB_ARGS"
}

# `host all all all METHOD` for connections from anywhere else: password_encryption's method.
setup_hba_conf() {
    [[ "${1:-}" == postgres ]] && shift
    local method
    method=$(postgres -C password_encryption "$@")
    : "${POSTGRES_HOST_AUTH_METHOD:=$method}"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
}

# psql on the temporary server's socket, as POSTGRES_USER, into POSTGRES_DB unless emptied.
docker_process_sql() {
    local runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    [[ -n "${POSTGRES_DB:-}" ]] && runner+=(--dbname "$POSTGRES_DB")
    PGHOST= PGHOSTADDR= "${runner[@]}" "$@"
}

temp_server_start() {
    [[ "${1:-}" == postgres ]] && shift
    # The given settings, then no TCP at all: only the unix socket in /var/run/postgresql.
    set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
    PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

temp_server_stop() {
    PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

setup_db() {
    local exists
    exists=$(POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$POSTGRES_DB" \
        --tuples-only <<<"SELECT 1 FROM pg_database WHERE datname = :'db' ;")
    if [[ -z "${exists//[[:space:]]/}" ]]; then
        POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$POSTGRES_DB" \
            <<<'CREATE DATABASE :"db" ;'
    fi
}

process_init_files() {
    local f
    for f; do
        case "$f" in
        *.sh)
            if [[ -x "$f" ]]; then
                log "running $f"
                "$f"
            else
                log "sourcing $f"
                # Sourced scripts run as in the official image's shell (no nounset there).
                set +u
                # shellcheck disable=SC1090
                . "$f"
                set -u
            fi
            ;;
        *.sql) log "running $f"; docker_process_sql -f "$f" ;;
        *.sql.gz) log "running $f"; gunzip -c "$f" | docker_process_sql ;;
        *.sql.xz) log "running $f"; xzcat "$f" | docker_process_sql ;;
        *.sql.zst) log "running $f"; zstd -dc "$f" | docker_process_sql ;;
        *) log "ignoring $f" ;;
        esac
    done
}

wants_help() {
    local arg
    for arg; do
        case "$arg" in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
    done
    return 1
}

main() {
    if [[ "${1:-}" == -* ]]; then
        set -- postgres "$@"
    fi
    if [[ "${1:-}" == postgres ]] && ! wants_help "$@"; then
        setup_env
        create_directories
        if [[ "$(id -u)" == 0 ]]; then
            # The secrets are in the environment now; the rest runs as postgres.
            export HOME=/var/lib/postgresql
            exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" "$@"
        fi
        if [[ -z "$DATABASE_ALREADY_EXISTS" ]]; then
            verify_minimum_env
            ls "$INITDB_DIR"/ >/dev/null
            init_database_dir
            setup_hba_conf "$@"
            # psql needs it only when POSTGRES_INITDB_ARGS asks for passwords on the socket.
            export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
            temp_server_start "$@"
            setup_db
            shopt -s nullglob
            process_init_files "$INITDB_DIR"/*
            shopt -u nullglob
            temp_server_stop
            unset PGPASSWORD
            log "PostgreSQL init process complete; ready for start up."
        else
            log "PostgreSQL database directory appears to contain a database; skipping initialization"
        fi
        # The server itself does not need the password (the official image leaves it there).
        unset POSTGRES_PASSWORD
    fi
    exec "$@"
}

main "$@"
