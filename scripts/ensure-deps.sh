#!/usr/bin/env bash
# Installs the system programs Corral uses, when missing: nats-server (the bus) and, for the
# isolating containerizer, bubblewrap and tini; for the multi-host tests (network namespaces),
# iproute2. Safe to run again; does nothing when all is there.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/ensure-nats.sh"
if [ -f "$here/ensure-isolation.sh" ]; then
  # Isolation tools are optional: without them agents fall back to weaker isolation (and say so).
  bash "$here/ensure-isolation.sh" || echo "corral: isolation tools missing; agents will use a weaker isolation" >&2
fi
# The multi-host tests build network namespaces with `ip` (iproute2) and enter them with nsenter
# (util-linux); without them those tests are skipped and say why, so a failure here is not fatal.
if ! command -v ip >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "corral: installing iproute2 for the multi-host tests (apt-get install -y iproute2)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y iproute2 >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y iproute2 >/dev/null; } \
    || echo "corral: could not install iproute2; the multi-host tests will be skipped" >&2
fi
