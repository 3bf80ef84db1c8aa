#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz, clang) into build-fuzz/ and runs each one for a
# bounded time from its committed seed corpus (tests/fuzz/seeds/<target>). Any crash, sanitizer
# report, leak, timeout or out-of-memory stop fails the script and leaves the input in
# build-fuzz/findings/. The corpus grown during the run stays in build-fuzz/corpus/<target>.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 45 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-45}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(fuzz_gguf fuzz_gguf_getters fuzz_vocab fuzz_tokenizer fuzz_pipeline_list)
cmake -S tests/fuzz -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
mkdir -p build-fuzz/findings
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  echo "== $t: ${seconds} s from tests/fuzz/seeds/$t" >&2
  # -max_len: the seeds are small; longer inputs only slow the search down.
  (cd build-fuzz/findings &&
   "../$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -max_len=4096 -print_final_stats=1 \
     "../corpus/$t" "../../tests/fuzz/seeds/$t" 2>"$t.log") || {
    echo "fuzz.sh: $t found a problem; see build-fuzz/findings/$t.log and the crash-*/leak-*/timeout-* file there" >&2
    tail -40 "build-fuzz/findings/$t.log" >&2
    exit 1
  }
  grep -E "^stat::number_of_executed_units|DONE" "build-fuzz/findings/$t.log" >&2 || true
done
