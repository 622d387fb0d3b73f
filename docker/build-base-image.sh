#!/usr/bin/env bash
# Build the local base image agentforge-base:bookworm (Debian bookworm + python3.11 + venv + pip).
#
# No image can be pulled on these machines, so the base image is made with debootstrap from the
# same Debian mirror apt uses here, then imported into Docker. Idempotent: does nothing if the
# image already exists (FORCE=1 rebuilds it).
#
#   bash docker/build-base-image.sh
#   BASE_IMAGE_TAG=agentforge-base:bookworm DEBIAN_MIRROR=http://deb.debian.org/debian bash ...
set -euo pipefail

IMAGE="${BASE_IMAGE_TAG:-agentforge-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
INCLUDE="python3,python3-venv,python3-pip,ca-certificates"

log() { echo "[build-base-image] $*" >&2; }

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists; nothing to do"
    exit 0
fi

command -v debootstrap >/dev/null 2>&1 || {
    log "debootstrap missing: run docker/install-engine.sh first"
    exit 1
}

# The Debian mirror this machine's apt uses (deb822 *.sources first, then one-line sources.list);
# the security and -updates archives are skipped: debootstrap wants the main archive.
find_mirror() {
    local f uri
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        # URIs: lines of stanzas; take the first one that is a plain Debian archive.
        while read -r uri; do
            [[ "$uri" == *debian-security* ]] && continue
            [[ "$uri" == */debian || "$uri" == */debian/ ]] && { echo "${uri%/}"; return 0; }
        done < <(awk 'tolower($1)=="uris:" {for (i=2;i<=NF;i++) print $i}' "$f")
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        uri=$(awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^(https?|file):/) {print $i; break}}' "$f" |
            grep -v -- '-security' | grep -E '/debian/?$' | head -n1 || true)
        [[ -n "$uri" ]] && { echo "${uri%/}"; return 0; }
    done
    echo "http://deb.debian.org/debian"
}

MIRROR="${DEBIAN_MIRROR:-$(find_mirror)}"
ROOTFS="$(mktemp -d /var/tmp/agentforge-rootfs.XXXXXX)"
cleanup() { rm -rf --one-file-system "$ROOTFS"; rm -f "$ROOTFS.debootstrap.log"; }
trap cleanup EXIT

log "debootstrap $SUITE from $MIRROR into $ROOTFS"
start=$SECONDS
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$ROOTFS.debootstrap.log" 2>&1 || {
    log "debootstrap failed; last lines:"
    tail -n 40 "$ROOTFS.debootstrap.log" >&2
    rm -f "$ROOTFS.debootstrap.log"
    exit 1
}
rm -f "$ROOTFS.debootstrap.log"
log "debootstrap took $((SECONDS - start))s"

# Slim the tree a little: apt lists and caches are not needed in the image.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb

start=$SECONDS
tar --numeric-owner -C "$ROOTFS" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase --include=$INCLUDE $SUITE $MIRROR" \
        - "$IMAGE" >/dev/null
log "docker import took $((SECONDS - start))s"
docker image ls "$IMAGE" >&2
