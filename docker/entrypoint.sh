#!/bin/sh
# Entrypoint of the project image: secrets given as files become variables of this process only.
#
# For every NAME_FILE in the environment (a path, e.g. /run/secrets/dagster_pg_password, mounted
# read-only), NAME is exported with the file's content (trailing newlines dropped), then the
# command runs. Dagster's dagster.yaml reads only `env:` values, so this is how a password held in
# a file reaches it; `docker inspect` shows NAME_FILE, never the value.
#   - a missing or empty file leaves NAME unset (an optional key that is not configured);
#   - NAME set as well, to another value than the file's, is refused (exit 64): one source for
#     each secret; the same value is accepted;
#   - an unreadable file is an error (exit 66; fix its owner: uid 10001, or its mode).
# The names exported are listed in AGENTFORGE_SECRET_FILES_EXPORTED (names only): a process
# started below this one reads those files again rather than refusing the inherited values.
#
# Every Python interpreter of the image does the same at start-up, with the same rules
# (agentforge_dagster/secret_files.py, run by a .pth file the Dockerfile writes), so `docker exec
# CONTAINER dagster ...` or `agentforge ...`, which skip this entrypoint, get the secrets too.
# This script is for what is not Python: `docker exec CONTAINER agentforge-entrypoint sh -c ...`.
set -eu

exported=" ${AGENTFORGE_SECRET_FILES_EXPORTED:-} "
names=""
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)_FILE=.*/\1/p' | sort -u); do
    # (a line of a multi-line value that merely looks like NAME_FILE=...: no such variable)
    file=$(printenv "${name}_FILE") || continue
    value=""
    if [ -n "$file" ] && [ -e "$file" ]; then
        if ! value=$(cat -- "$file"); then
            echo "entrypoint: cannot read $file (${name}_FILE) as uid $(id -u)" >&2
            exit 66
        fi
    elif [ -n "$file" ] && [ -d "$(dirname -- "$file")" ] && ! [ -x "$(dirname -- "$file")" ]; then
        echo "entrypoint: cannot read $file (${name}_FILE) as uid $(id -u): its folder is closed" >&2
        exit 66
    fi
    current=$(printenv "$name" || true)
    case "$exported" in
    *" $name "*) inherited=yes ;;
    *) inherited=no ;;
    esac
    if [ -n "$current" ] && [ "$inherited" = no ] && [ "$current" != "$value" ]; then
        echo "entrypoint: both $name and ${name}_FILE are set, to different values; keep one" \
            "(unset $name to use the file $file)" >&2
        exit 64
    fi
    if [ -n "$value" ]; then
        export "$name=$value"
        names="$names $name"
    elif [ "$inherited" = yes ]; then
        unset "$name"  # exported above us from a file that is gone or empty now
    fi
done
if [ -n "$names" ]; then
    export AGENTFORGE_SECRET_FILES_EXPORTED="${names# }"
else
    unset AGENTFORGE_SECRET_FILES_EXPORTED
fi
unset name file value current inherited exported names

exec "$@"
