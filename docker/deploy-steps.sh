#!/usr/bin/env bash
# The Docker deployment, brought up by a new operator: README.md ("Deploy it") shows
# this file as it is, and `make test-deploy` (tests/stack/test_compose_stack.py) runs it step by
# step, so the README's commands and the tested ones are the same. Run from the repository root
# as root, or put sudo before each command (docker and the secret files need it).
# Each "# step:" line starts a step; the test times each one.
set -euo pipefail

# step: images
make images                        # Docker engine, base image (once per machine), project image
bash docker/build-proxy-image.sh   # the front door and the Docker socket proxy
bash docker/build-standins.sh      # only where postgres:15 and minio/minio cannot be pulled

# step: settings
test -f docker/.env || cp docker/compose.env.example docker/.env   # then read it, change what you need
bash docker/set-env.sh AGENTFORGE_IMAGE="$(bash docker/build-image.sh | tail -n1)" \
    PROXY_IMAGE="$(bash docker/build-proxy-image.sh | tail -n1)"

# step: secrets
bash docker/make-secrets.sh init            # passwords as files, in AGENTFORGE_SECRETS_DIR
bash docker/make-secrets.sh user alice      # an operator's UI login (asks for the password)
bash docker/make-secrets.sh user bob viewer # a viewer's login: the read-only UI

# step: up
docker-compose -f docker/compose.yaml up -d
