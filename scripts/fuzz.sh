#!/usr/bin/env bash
# Fuzzes Berth's parsers with cargo-fuzz (libFuzzer).
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]   default: 10 seconds each, every target
# Targets: digest, reference, content_range, manifest, http_request (fuzz/fuzz_targets/). Seeds live in
# fuzz/seeds/; the corpus a run grows goes to fuzz/corpus/ (not committed). A crash fails the run
# and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
seconds="${1:-10}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(digest reference content_range manifest http_request)
command -v cargo-fuzz >/dev/null || {
  echo "fuzz.sh: installing cargo-fuzz with cargo" >&2
  cargo install --quiet --locked cargo-fuzz
}
# cargo-fuzz passes nightly-only sanitizer flags; RUSTC_BOOTSTRAP lets the one stable
# toolchain on this machine accept them.
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz.sh: $t for ${seconds}s" >&2
  (cd fuzz && cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -print_final_stats=1 2>&1) \
    | grep -E "^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)" || true
  # libFuzzer exits non-zero on a crash; pipefail alone would hide it behind grep, so check artifacts.
  if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
    echo "fuzz.sh: $t crashed; inputs in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
