#!/usr/bin/env bash
# The whole check: provision nats-server, type-check, run every test, and end with the line
# "N passed, N failed[, N skipped]" (.ci/run prints it itself, last, and sets CORRAL_NO_SUMMARY).
# Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh || exit 1
status=0
echo "== type check"
npx tsc -p tsconfig.json --noEmit || status=1
echo "== tests"
mkdir -p .ci
rm -f .ci/report.json
npx vitest run --reporter=default --reporter=json --outputFile.json=.ci/report.json || status=1
if [ -z "${CORRAL_NO_SUMMARY:-}" ]; then node scripts/test-summary.mjs .ci/report.json || status=1; fi
exit $status
