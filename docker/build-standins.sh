#!/usr/bin/env bash
# Build local stand-ins for the two images docker/compose.yaml names but these machines cannot
# pull, tagged exactly as compose names them: postgres:15 (Debian's postgresql-15, the official
# entrypoint's behaviour) and minio/minio:latest (moto's S3 behind a SigV4 check with MinIO's root
# credentials). Sources: docker/standins/{postgres,minio}/. compose.yaml is unchanged: on a
# machine that can pull, the real images are used.
#
#   bash docker/build-standins.sh        # prints the two tags, one a line (log on stderr)
#
# Each image carries the labels org.agentforge.standin=<name> and org.agentforge.standin.digest=
# <hash of its sources, the base image's id>: a tag with the current digest is a cache hit (~1 s);
# a tag without our label (a real, pulled image) is never replaced.
#
# Environment: BASE_IMAGE (default agentforge-base:bookworm, made by build-base-image.sh),
#              EXTRA_BUILD_ARGS (e.g. --no-cache).
set -euo pipefail

cd "$(dirname "$0")/.."
BASE_IMAGE="${BASE_IMAGE:-agentforge-base:bookworm}"
read -r -a EXTRA <<<"${EXTRA_BUILD_ARGS:-}"
KIND_LABEL=org.agentforge.standin
DIGEST_LABEL=org.agentforge.standin.digest
log() { echo "[build-standins] $*" >&2; }

docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 ||
    BASE_IMAGE_TAG="$BASE_IMAGE" bash docker/build-base-image.sh >&2
BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")

# BuildKit (multi-stage builds stay lean): buildx where present, else a pre-23 client such as
# Debian's /usr/bin/docker 20.10 with its built-in BuildKit; the legacy builder otherwise (the
# contexts are a few kB, so it needs no trimming).
CLIENT=docker
BUILDKIT=0
if docker buildx version >/dev/null 2>&1; then
    BUILDKIT=1
else
    for c in docker /usr/bin/docker; do
        command -v "$c" >/dev/null 2>&1 || continue
        v=$("$c" version --format '{{.Client.Version}}' 2>/dev/null || true)
        major=${v%%.*}
        if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 18 && major < 23)); then
            CLIENT=$c
            BUILDKIT=1
            break
        fi
    done
fi

CONTEXT=$(mktemp -d /tmp/agentforge-standins.XXXXXX)
trap 'rm -rf "$CONTEXT"' EXIT

# build_standin NAME TAG: docker/standins/NAME as TAG, unless TAG is current or not ours.
build_standin() {
    local name=$1 tag=$2 src="docker/standins/$1" digest labels kind old_digest old_id start
    digest=$( (cd "$src" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$BASE_ID") |
        sha256sum | cut -c1-16)
    old_id=""
    if labels=$(docker image inspect -f \
        "{{index .Config.Labels \"$KIND_LABEL\"}} {{index .Config.Labels \"$DIGEST_LABEL\"}}" \
        "$tag" 2>/dev/null); then
        read -r kind old_digest <<<"$labels"
        if [[ "$kind" != "$name" ]]; then
            log "$tag exists and is not our stand-in (no label $KIND_LABEL=$name): keeping it"
            return 0
        fi
        if [[ "$old_digest" == "$digest" ]]; then
            log "$tag is current (stand-in $digest)"
            return 0
        fi
        old_id=$(docker image inspect -f '{{.Id}}' "$tag")
    fi

    rm -rf "${CONTEXT:?}/$name"
    cp -a "$src" "$CONTEXT/$name"
    # pip inside the build trusts the index only through the host's CA bundle (minio's venv).
    cp /etc/ssl/certs/ca-certificates.crt "$CONTEXT/$name/ca-certificates.crt"
    start=$SECONDS
    DOCKER_BUILDKIT=$BUILDKIT "$CLIENT" build --network host \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --label "$KIND_LABEL=$name" --label "$DIGEST_LABEL=$digest" \
        --label "org.opencontainers.image.title=agentforge stand-in for $tag" \
        "${EXTRA[@]}" -t "$tag" "$CONTEXT/$name" >&2
    log "built $tag (stand-in $digest) in $((SECONDS - start))s"
    # The stand-in this one replaces, now untagged (kept if a container still uses it).
    if [[ -n "$old_id" && "$old_id" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
}

build_standin postgres postgres:15
build_standin minio minio/minio:latest
echo postgres:15
echo minio/minio:latest
