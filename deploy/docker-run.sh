#!/usr/bin/env bash
# ptc collect in Docker, next to a router on this host (docs/deploy.md):
#
#   deploy/docker-run.sh IFACE BROKERS [ptc collect options...]
#   PTC_TTS_SHIFT=18 IMAGE=registry.example.net/ptc:0.1.0 deploy/docker-run.sh eth1 kafka1:9092,kafka2:9092
#
# Host networking (the router's interfaces), only CAP_NET_RAW, a read-only root, restarted
# unless stopped, and SIGTERM with time to flush to Kafka on `docker stop`. Every PTC_*
# variable of this environment is passed into the container; IMAGE names the image
# (default ptc:latest), NAME the container (default ptc-IFACE).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 IFACE BROKERS [ptc collect options...]" >&2
    exit 2
fi
iface=$1
brokers=$2
shift 2

args=(
    run --detach
    --name "${NAME:-ptc-${iface}}"
    --restart unless-stopped
    --network host
    --cap-drop ALL --cap-add NET_RAW
    --read-only
    --stop-timeout 60
    --env "PTC_IFACE=${iface}"
    --env "PTC_BROKERS=${brokers}"
)
while IFS= read -r name; do
    args+=(--env "${name}")  # --env NAME passes this environment's value
done < <(compgen -e | grep '^PTC_' | grep -vx -e PTC_IFACE -e PTC_BROKERS || true)

exec docker "${args[@]}" "${IMAGE:-ptc:latest}" "$@"
