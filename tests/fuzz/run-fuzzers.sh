#!/bin/sh
# run-fuzzers.sh - run every libFuzzer target of tests/fuzz for a bounded time.
#
#   tests/fuzz/run-fuzzers.sh BUILD_DIR SECONDS [TARGET...]
#
# BUILD_DIR is a clang build configured with -DMXGATE_FUZZ=ON (make fuzz /
# make fuzz-smoke do that).  Each target runs SECONDS seconds on one core,
# starting from its committed seed corpus tests/fuzz/corpus/NAME/; new
# inputs go to BUILD_DIR/fuzz-corpus/NAME/ (kept between runs, never
# committed), crash reproducers to BUILD_DIR/fuzz-artifacts/.  Exits non-zero
# when any target finds a crash, a leak, a timeout (> 10 s for one input) or
# an input that needs more than 2 GB.  Reproduce with:
#   BUILD_DIR/tests/fuzz/fuzz_NAME BUILD_DIR/fuzz-artifacts/crash-...
set -u
build=${1:?usage: run-fuzzers.sh BUILD_DIR SECONDS [TARGET...]}
secs=${2:?usage: run-fuzzers.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
targets=${*:-"smtp_cmd smtp_data headers hdrsplit proxy config smtp_reply queue_envelope spf_record"}
mkdir -p "$build/fuzz-artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=""
for t in $targets; do
	bin="$build/tests/fuzz/fuzz_$t"
	if [ ! -x "$bin" ]; then
		echo "run-fuzzers: $bin missing (build the fuzz-all target)" >&2
		failed="$failed $t"
		continue
	fi
	work="$build/fuzz-corpus/$t"
	mkdir -p "$work"
	log="$build/fuzz-artifacts/$t.log"
	printf 'fuzz %-16s %ss ... ' "$t" "$secs"
	if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
		-print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t-" \
		"$work" "$here/corpus/$t" </dev/null >"$log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
		echo "ok (${runs:-?} runs)"
	else
		echo "FAILED - see $log"
		grep -E "ERROR|invariant|runtime error|SUMMARY|Test unit written" "$log" | head -20
		failed="$failed $t"
	fi
done
if [ -n "$failed" ]; then
	echo "run-fuzzers: failures:$failed" >&2
	exit 1
fi
