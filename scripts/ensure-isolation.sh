#!/usr/bin/env bash
# Makes sure the tools the Linux containerizer prefers are installed: bubblewrap (bwrap: namespaces
# and mounts in one fast exec) and tini (a pid 1 that forwards signals and reports exit codes).
# Without them the containerizer still works, falling back to unshare + setpriv (util-linux), so a
# failure here is reported but is not fatal to the caller unless it checks the exit status.
# Order: both on PATH -> nothing to do; else Debian's packages when we are root; else a clear message.
set -euo pipefail
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v tini >/dev/null 2>&1 || missing+=(tini)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "corral: installing ${missing[*]} from the distribution (apt-get install -y ${missing[*]})" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh image has no package lists; only refresh them when the first attempt needs it.
  apt-get install -y "${missing[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
  if command -v bwrap >/dev/null 2>&1 && command -v tini >/dev/null 2>&1; then
    exit 0
  fi
fi
echo "corral: ${missing[*]} not found on PATH; the Linux containerizer will fall back to unshare + setpriv." >&2
echo "  Install them for faster launches and correct signal handling" >&2
echo "  (Debian/Ubuntu: 'sudo apt-get install bubblewrap tini'; Fedora: 'sudo dnf install bubblewrap tini')." >&2
exit 1
