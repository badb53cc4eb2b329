#!/usr/bin/env bash
# Installs the system programs Corral uses, when missing: nats-server (the bus) and, for the
# isolating containerizer, bubblewrap and tini. Safe to run again; does nothing when all is there.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/ensure-nats.sh"
if [ -f "$here/ensure-isolation.sh" ]; then
  # Isolation tools are optional: without them agents fall back to weaker isolation (and say so).
  bash "$here/ensure-isolation.sh" || echo "corral: isolation tools missing; agents will use a weaker isolation" >&2
fi
