#!/usr/bin/env bash
# Build the proxy image agentforge-proxy:<version>-<content hash> (docker/proxy/Dockerfile): nginx
# from Debian's packages as the front door and as the Docker socket proxy.
#
# The last line on stdout is the tag; the build log goes to stderr:
#   PROXY_IMAGE=$(bash docker/build-proxy-image.sh | tail -n1)
# The tag names the content of docker/proxy/, so an unchanged folder is a cache hit (~1 s).
#
# Environment: BASE_IMAGE (default agentforge-base:bookworm, made by build-base-image.sh),
#              IMAGE_NAME (default agentforge-proxy), EXTRA_BUILD_ARGS.
set -euo pipefail

cd "$(dirname "$0")/.."
BASE_IMAGE="${BASE_IMAGE:-agentforge-base:bookworm}"
IMAGE_NAME="${IMAGE_NAME:-agentforge-proxy}"
read -r -a EXTRA <<<"${EXTRA_BUILD_ARGS:-}"
log() { echo "[build-proxy-image] $*" >&2; }

VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
DIGEST=$( (cd docker/proxy && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-12)
TAG="${IMAGE_NAME}:${VERSION}-${DIGEST}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG exists"
    echo "$TAG"
    exit 0
fi
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || BASE_IMAGE_TAG="$BASE_IMAGE" bash docker/build-base-image.sh >&2

start=$SECONDS
# The context is docker/proxy only (a few kB): the legacy builder is fine; apt reaches Debian's
# mirror over the host's network.
DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "org.opencontainers.image.title=agentforge-proxy" \
    --label "org.opencontainers.image.version=$VERSION" \
    "${EXTRA[@]}" -t "$TAG" docker/proxy >&2
log "built $TAG in $((SECONDS - start))s"
echo "$TAG"
