#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run), each stage timed on stderr:
#   1. install, build, fetch the real models;
#   2. every test with the Vulkan validation layer on (any validation error fails the test that
#      caused it);
#   3. the GPU suites again with lavapipe pinned to one thread (results must not depend on the
#      thread count; the GPU-free suites cannot depend on it, so they are not run twice), all
#      but the two kernel suites under a CPU hog that leaves half a core (stress-ng): no test may
#      depend on the machine's speed;
#   4. the ASan+UBSan flavour (build-asan/): the unit and GPU suites, every report fatal;
#   5. the TSan flavour (build-tsan/): the collective, the split, the server and the kernels'
#      ahead-of-time pipeline builds, which run threads;
#   6. each libFuzzer harness for a bounded time from its committed seeds (scripts/fuzz.sh).
# CHORUS_TEST_STAGES="2 4" (say) runs only those stages after stage 1.
set -euo pipefail
cd "$(dirname "$0")/.."
stages="${CHORUS_TEST_STAGES:-2 3 4 5 6}"
want() { [[ " $stages " == *" $1 "* ]]; }
t0=$SECONDS
stage() { echo "== [$((SECONDS - t0)) s] $*" >&2; }

stage "install and build"
scripts/install-deps.sh
scripts/build.sh
# Real quantised models some tests need, fetched once into a cache outside the repository.
scripts/fetch-models.sh all >/dev/null
export CHORUS_NO_PIPELINE_CACHE=1

if want 2; then
  stage "all tests, validation layer on"
  CHORUS_VALIDATION=1 ctest --test-dir build --output-on-failure -j2 --timeout 900
fi
if want 3; then
  stage "GPU suites again with LP_NUM_THREADS=1, under a CPU hog leaving half a core"
  # Every core but half a one is taken (nproc workers at (nproc - 0.5) / nproc load each).
  n=$(nproc)
  stress-ng --cpu "$n" --cpu-load $(( (200 * n - 100) / (2 * n) )) --quiet &
  hog=$!
  trap 'kill $hog 2>/dev/null || true' EXIT
  # The kernel suites (matrix products of every format and variant: long, pure compute) run
  # after the hog, so the stage stays within CI's time; every other GPU suite runs under it.
  LP_NUM_THREADS=1 ctest --test-dir build --output-on-failure -j2 --timeout 1800 -L gpu -E '^test_(matvec|matmul)($|_shard)'
  kill $hog 2>/dev/null || true
  wait $hog 2>/dev/null || true
  trap - EXIT
  LP_NUM_THREADS=1 ctest --test-dir build --output-on-failure -j2 --timeout 1800 -R '^test_(matvec|matmul)($|_shard)'
fi

sanitizer_build() {  # DIR FLAVOUR [TARGETS...]
  local dir=$1 flavour=$2
  shift 2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHORUS_WERROR=ON -DCHORUS_BUILD_BENCH=OFF \
    -DCHORUS_SANITIZE="$flavour" >/dev/null
  if (($#)); then cmake --build "$dir" -j"$(nproc)" --target "$@"; else cmake --build "$dir" -j"$(nproc)"; fi
}
supp="$PWD/tests/sanitizers"
# The sanitizer stages run our code 2-5x slower and lavapipe beside it; on a loaded machine a
# kernel test can pass the default 60 s host-wait limit without anything being stuck, so
# these stages allow 10 minutes per wait (a real hang still ends, with the device named).
export CHORUS_TIMEOUT_MS="${CHORUS_TIMEOUT_MS:-600000}"
if want 4; then
  stage "ASan+UBSan build"
  sanitizer_build build-asan address
  stage "unit and GPU suites under ASan+UBSan"
  # Reports are fatal: ASan aborts on the first error, UBSan too (the build also passes
  # -fno-sanitize-recover); LeakSanitizer runs at exit with third-party suppressions only.
  ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0" \
    ctest --test-dir build-asan --output-on-failure -j2 --timeout 1800 -L "unit|gpu"
fi
if want 5; then
  stage "TSan build (test_collective, test_split, test_server, test_kernels)"
  sanitizer_build build-tsan thread chorus test_collective test_split test_server test_kernels
  stage "test_collective, test_split, test_server and test_kernels under TSan"
  # setarch -R (no address-space randomisation): kernels with more mmap randomisation bits
  # than GCC 12's TSan runtime expects make it fail to map its shadow memory.
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp" \
    setarch "$(uname -m)" -R ctest --test-dir build-tsan --output-on-failure -j2 --timeout 1800 -R '^test_(collective|split|server|kernels)$'
fi
if want 6; then
  stage "fuzzing, ${CHORUS_FUZZ_SECONDS:-45} s per harness"
  scripts/fuzz.sh "${CHORUS_FUZZ_SECONDS:-45}"
fi
stage "done"
