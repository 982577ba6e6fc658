#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 15) on a working copy of its
# seed corpus; fails at the first crash, leaving the input in fuzz/artifacts/TARGET/.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# Stable Rust is enough: no sanitizer (`--sanitizer none`), only libFuzzer's coverage
# instrumentation, with debug assertions and overflow checks on. A panic is the crash.
# Seeds live in fuzz/corpus/TARGET (committed); each run works in fuzz/work/TARGET (ignored),
# which keeps what earlier runs found.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-15}
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi

# The same flags for every build, so that nothing is built twice.
build_flags=(--sanitizer none --debug-assertions)
cargo fuzz build "${build_flags[@]}"

triple=$(rustc -vV | sed -n 's/^host: //p')
# cargo builds where CARGO_TARGET_DIR says, if set.
bin_dir=${CARGO_TARGET_DIR:-target}/$triple/release
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

summary=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t"
    for seed in corpus/"$t"/*; do
        if [[ -f $seed && ! -e work/$t/${seed##*/} ]]; then
            cp "$seed" "work/$t/"
        fi
    done
    echo
    echo "==== fuzz $t: ${seconds}s ===="
    log=$(mktemp)
    status=0
    "$bin_dir/$t" "work/$t" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    # libFuzzer's progress lines start with '#': only the rest (and any crash report).
    grep -v '^#' "$log" || true
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rm -f "$log"
    summary+=("$(printf '%-10s %6ss %10s runs' "$t" "$seconds" "${runs:-?}")")
    if [[ $status -ne 0 ]]; then
        echo "FAILED: fuzz target $t crashed (exit $status); the input:"
        for a in artifacts/"$t"/*; do
            [[ -f $a ]] || continue
            echo "  $a"
            od -An -tx1 -v "$a" | head -20 | sed 's/^/    /'
        done
        echo "reproduce: cargo fuzz run ${build_flags[*]} $t ARTIFACT"
        exit 1
    fi
done

echo
echo "==== fuzz summary: no crashes ===="
printf '%s\n' "${summary[@]}"
