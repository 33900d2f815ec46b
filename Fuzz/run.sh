#!/usr/bin/env bash
# Builds the libFuzzer targets (address sanitizer, coverage instrumentation) and runs each
# for FUZZ_SECONDS (default 60), or for FUZZ_RUNS executions when that is set, keeping a corpus per target in Fuzz/Corpus/<target> (seeds
# committed; new finds written to .build-fuzz/corpus). A crash stops the run with exit 1 and
# leaves the input in .build-fuzz/crashes/<target>. See Fuzz/README.md.
#   Fuzz/run.sh [TARGET...]          all targets when none are named
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
budget=(-max_total_time="$seconds")
[ -z "${FUZZ_RUNS:-}" ] || budget=(-runs="$FUZZ_RUNS")
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(FuzzOTLPProtobuf FuzzOTLPJSON FuzzGRPCFraming FuzzWhere FuzzConfig)
toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")
runtime="$toolchain/lib/swift/clang/lib/linux/libclang_rt.fuzzer_no_main-$(uname -m).a"
flags=(-c release --scratch-path .build-fuzz
  -Xswiftc -DFUZZING -Xswiftc -sanitize=address
  -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,trace-cmp,pc-table
  -Xcc -fsanitize=fuzzer-no-link,address
  -Xlinker "$runtime" -Xlinker -lstdc++)
# FUZZ_SKIP_BUILD=1 reuses the last build (to run several targets side by side).
[ -n "${FUZZ_SKIP_BUILD:-}" ] || for t in "${targets[@]}"; do swift build "${flags[@]}" --product "$t"; done
bin=$(swift build "${flags[@]}" --show-bin-path)
status=0
# The Swift crash handler trips over ASan; libFuzzer reports crashes itself.
export SWIFT_BACKTRACE=enable=no
# No allocation stack traces: several times faster on allocation-heavy targets (JSON, YAML).
# A crash keeps its input; replay it with ASAN_OPTIONS unset for the full report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=0}
for t in "${targets[@]}"; do
  work=.build-fuzz/corpus/$t crashes=.build-fuzz/crashes/$t
  mkdir -p "$work" "$crashes"
  echo "== $t: ${budget[*]}"
  if ! nice -n "${FUZZ_NICE:-0}" "$bin/$t" "${budget[@]}" -max_len=65536 -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$crashes/" "$work" "Fuzz/Corpus/$t" 2>&1 | tee ".build-fuzz/$t.log" | grep -E "^(#[0-9]+.*(DONE|pulse)|stat::|==[0-9]+==ERROR|SUMMARY)"; then
    :
  fi
  if [ "${PIPESTATUS[0]}" -ne 0 ] || ls "$crashes"/crash-* "$crashes"/timeout-* "$crashes"/leak-* >/dev/null 2>&1; then
    echo "$t found a failure: see .build-fuzz/$t.log and $crashes"; status=1
  fi
done
exit $status
