#!/usr/bin/env bash
# Makes sure a nats-server binary with JetStream is available: Corral's only infrastructure.
# Order: nats-server on PATH; else Debian's package when we are root; else a clear message.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "corral: installing nats-server from the distribution (apt-get install -y nats-server)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y nats-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nats-server >/dev/null; }
  command -v nats-server >/dev/null 2>&1 && exit 0
fi
echo "corral: nats-server was not found on PATH." >&2
echo "  Install it (Debian/Ubuntu: 'sudo apt-get install nats-server'," >&2
echo "  elsewhere: https://docs.nats.io/running-a-nats-service/introduction/installation) and retry." >&2
exit 1
