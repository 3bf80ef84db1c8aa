#!/usr/bin/env bash
# The whole test suite: install, build, then every test with the Vulkan validation layer on
# (any validation error fails the test that caused it), then the suite again with
# lavapipe pinned to one thread (results must not depend on the thread count).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# Real quantised models some tests need, fetched once into a cache outside the repository.
scripts/fetch-models.sh smollm2 >/dev/null
export CHORUS_NO_PIPELINE_CACHE=1
echo "== all tests, validation layer on" >&2
CHORUS_VALIDATION=1 ctest --test-dir build --output-on-failure -j2 --timeout 900
echo "== all tests again with LP_NUM_THREADS=1" >&2
LP_NUM_THREADS=1 ctest --test-dir build --output-on-failure -j2 --timeout 900
