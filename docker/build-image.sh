#!/usr/bin/env bash
# Build the project image agentforge:<version>-<sha> from the repository root.
#
# The last line on stdout is the tag; everything else (build log) goes to stderr, so
#   TAG=$(bash docker/build-image.sh | tail -n1)
#
# Environment:
#   BASE_IMAGE   base image (default agentforge-base:bookworm, made by build-base-image.sh)
#   IMAGE_NAME   repository name (default agentforge)
#   BUILDER      auto (default) | buildkit | legacy
#   EXTRA_BUILD_ARGS  extra arguments for docker build (e.g. --no-cache)
#   REVISION     tag suffix and revision label instead of the git short sha (+ "-dirty")
#
# Builder choice (auto): BuildKit when the client has it (buildx plugin, or a pre-23 client such
# as Debian's /usr/bin/docker 20.10 with its built-in BuildKit), since only BuildKit reads
# docker/Dockerfile.dockerignore. Otherwise the legacy builder gets a context made here as a tar
# stream of just the files the image needs (the repo root holds an ~800 MB .venv).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO_ROOT=$PWD

BASE_IMAGE="${BASE_IMAGE:-agentforge-base:bookworm}"
IMAGE_NAME="${IMAGE_NAME:-agentforge}"
BUILDER="${BUILDER:-auto}"
read -r -a EXTRA <<<"${EXTRA_BUILD_ARGS:-}"

log() { echo "[build-image] $*" >&2; }

# Files of the build context (keep in step with docker/Dockerfile.dockerignore).
CONTEXT_FILES=(pyproject.toml README.md workspace.yaml agentforge_dagster
    docker/Dockerfile docker/workspace.docker.yaml docker/dagster.docker.yaml docker/entrypoint.sh
    docker/.build/ca-certificates.crt)

VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")

# Revision: short commit, "-dirty" appended when a file that goes into the image differs from it
# (read-only git plumbing; no index refresh). "nogit" outside a git work tree.
if [[ -n "${REVISION:-}" ]]; then
    GIT_SHA="$REVISION"   # an explicit revision (e.g. a second image for a roll-back drill)
elif GIT_SHA=$(git rev-parse --short HEAD 2>/dev/null); then
    image_paths=(pyproject.toml README.md workspace.yaml agentforge_dagster docker)
    if ! git diff-index --quiet HEAD -- "${image_paths[@]}" 2>/dev/null ||
        [[ -n "$(git ls-files --others --exclude-standard -- "${image_paths[@]}" 2>/dev/null)" ]]; then
        GIT_SHA="${GIT_SHA}-dirty"
    fi
else
    GIT_SHA=nogit
fi
TAG="${IMAGE_NAME}:${VERSION}-${GIT_SHA}"

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [[ "$BASE_IMAGE" == agentforge-base:* ]]; then
        log "base image $BASE_IMAGE missing: building it"
        BASE_IMAGE_TAG="$BASE_IMAGE" bash docker/build-base-image.sh >&2
    else
        log "base image $BASE_IMAGE is not present locally (nothing can be pulled here); trying anyway"
    fi
fi

# pip inside the build reaches the package index only when it trusts the host's CA bundle.
mkdir -p docker/.build
HOST_CA=/etc/ssl/certs/ca-certificates.crt
if ! cmp -s "$HOST_CA" docker/.build/ca-certificates.crt 2>/dev/null; then
    cp "$HOST_CA" docker/.build/ca-certificates.crt
fi

# Pick a builder.
CLIENT=docker
if [[ "$BUILDER" == auto || "$BUILDER" == buildkit ]]; then
    mode=""
    if docker buildx version >/dev/null 2>&1; then
        mode=buildkit
    else
        # A client older than 23.0 has BuildKit built in (DOCKER_BUILDKIT=1, no buildx needed).
        for c in docker /usr/bin/docker; do
            command -v "$c" >/dev/null 2>&1 || continue
            v=$("$c" version --format '{{.Client.Version}}' 2>/dev/null || true)
            major=${v%%.*}
            if [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 18 && major < 23)); then
                CLIENT=$c
                mode=buildkit
                break
            fi
        done
    fi
    if [[ -z "$mode" ]]; then
        [[ "$BUILDER" == buildkit ]] && { log "BuildKit requested but not available"; exit 1; }
        mode=legacy
    fi
else
    mode=legacy
fi

build_args=(
    --network host
    -f docker/Dockerfile
    --build-arg "BASE_IMAGE=${BASE_IMAGE}"
    --build-arg "VERSION=${VERSION}"
    --build-arg "GIT_SHA=${GIT_SHA}"
    -t "$TAG"
    "${EXTRA[@]}"
)

start=$SECONDS
if [[ "$mode" == buildkit ]]; then
    log "building $TAG with BuildKit ($CLIENT), base $BASE_IMAGE"
    DOCKER_BUILDKIT=1 "$CLIENT" build --progress=plain "${build_args[@]}" "$REPO_ROOT" >&2
else
    log "building $TAG with the legacy builder (trimmed tar context), base $BASE_IMAGE"
    tar -C "$REPO_ROOT" -c \
        --exclude='__pycache__' --exclude='*.py[cod]' --exclude='*.egg-info' \
        "${CONTEXT_FILES[@]}" |
        DOCKER_BUILDKIT=0 docker build "${build_args[@]}" - >&2
fi
log "built $TAG in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$TAG"
