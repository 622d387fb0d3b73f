#!/usr/bin/env bash
# Taking an order into the running deployment from the shell: README.md ("Deploy it")
# shows this file as it is, and `make test-deploy` runs it. The UI's launchpad takes the same
# order as the job take_order (its config: the fields below under ops.accept_order.config).
set -euo pipefail

# step: submit
docker-compose -f docker/compose.yaml exec -T user_code agentforge submit \
    --customer "Ada Lovelace Ltd" --service blog_post --price 120.00 \
    --brief "Five ways a small bakery can use its blog to bring customers back"

# step: launch
docker-compose -f docker/compose.yaml exec -T daemon dagster job launch -j take_order \
    -w /opt/dagster/app/docker/workspace.docker.yaml --config-json '{"ops": {"accept_order":
    {"config": {"customer": "Grace Hopper Inc", "service": "product_description",
    "price": "80.00", "brief": "A standing desk for people who debug all day"}}}}'
