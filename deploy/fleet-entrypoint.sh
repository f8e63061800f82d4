#!/bin/sh
# One node of the two-node Compose fleet. Shared (volume `fleet`): the master key, the host
# key every node presents (so operators' known_hosts stays valid whichever node answers) and
# the recordings root. Per node (its own volume): the state directory with the node id
# Gatehouse generates beside the host key on first start. The first node to start creates
# the shared keys and registers the demo target; the others wait on the lock. No manual step.
# The directories can be moved (tests/compose_fleet.rs runs two of these on loopback).
set -eu
if [ "${1:-serve}" != "serve" ]; then exec gatehouse "$@"; fi
fleet="${GATEHOUSE_FLEET_DIR:-/fleet}"
keys="${GATEHOUSE_KEYS_DIR:-/keys}"
state="${GATEHOUSE_STATE_DIR:-/var/lib/gatehouse}"
target="${GATEHOUSE_DEMO_TARGET:-root@target:22}"
mkdir -p "$fleet" "$state" "$keys"
(
    flock 9
    [ -f "$keys/target_identity" ] || ssh-keygen -q -t ed25519 -N '' -C gatehouse-compose -f "$keys/target_identity"
    [ -f "$fleet/gatehouse_host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C 'gatehouse host key' -f "$fleet/gatehouse_host_ed25519"
    until gatehouse env list >/dev/null 2>&1; do echo "waiting for the store…"; sleep 1; done
    gatehouse env add demo 2>/dev/null || true
    gatehouse target add target --env demo --ssh "$target" --identity "$keys/target_identity" \
        --trust-on-first-use 2>/dev/null || true
) 9>"$fleet/.setup.lock"
# the shared host key, copied beside this node's own id
[ -f "$state/gatehouse_host_ed25519" ] || {
    cp "$fleet/gatehouse_host_ed25519" "$fleet/gatehouse_host_ed25519.pub" "$state/"
    chmod 600 "$state/gatehouse_host_ed25519"
}
exec gatehouse serve
