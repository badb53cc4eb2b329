#!/usr/bin/env bash
# The whole check: provision nats-server, type-check, run every test, and end with the
# closing line "N passed, N failed[, N skipped]" that CI reads. Exits non-zero on any failure.
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
node scripts/test-summary.mjs .ci/report.json || status=1
exit $status
