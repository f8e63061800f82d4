#!/bin/sh
# Registers the demo target on first start (its identity key is shared with the target
# container through the `keys` volume), then serves. Re-running is harmless.
set -eu
if [ "${1:-serve}" != "serve" ]; then exec gatehouse "$@"; fi
mkdir -p /var/lib/gatehouse /keys
[ -f /keys/target_identity ] || ssh-keygen -q -t ed25519 -N '' -C gatehouse-compose -f /keys/target_identity
until gatehouse env list >/dev/null 2>&1; do echo "waiting for the store…"; sleep 1; done
gatehouse env add demo 2>/dev/null || true
gatehouse target add target --env demo --ssh root@target:22 --identity /keys/target_identity \
    --trust-on-first-use 2>/dev/null || true
exec gatehouse serve
