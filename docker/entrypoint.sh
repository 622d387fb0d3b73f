#!/bin/sh
# Entrypoint of the project image: secrets given as files become variables of this process only.
#
# For every NAME_FILE in the environment (a path, e.g. /run/secrets/dagster_pg_password, mounted
# read-only), NAME is exported with the file's content (trailing newlines dropped), then the
# command runs. Dagster's dagster.yaml reads only `env:` values, so this is how a password held in
# a file reaches it; `docker inspect` shows NAME_FILE, never the value.
#   - a missing or empty file leaves NAME unset (an optional key that is not configured);
#   - NAME set as well as NAME_FILE is refused: one source for each secret;
#   - an unreadable file is an error (fix its owner: uid 10001, or its mode).
set -eu

for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)_FILE=.*/\1/p'); do
    file=$(printenv "${name}_FILE")
    if [ -n "$(printenv "$name" || true)" ]; then
        echo "entrypoint: both $name and ${name}_FILE are set; keep one" >&2
        exit 64
    fi
    [ -e "$file" ] || continue
    if ! value=$(cat -- "$file"); then
        echo "entrypoint: cannot read $file (${name}_FILE) as uid $(id -u)" >&2
        exit 66
    fi
    [ -n "$value" ] || continue
    export "$name=$value"
done
unset name file value

exec "$@"
