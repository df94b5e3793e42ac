#!/usr/bin/env bash
# run_fuzz.sh FUZZER SEED_CORPUS WORK_DIR SECONDS: fuzzes a copy of the seed corpus for a bounded
# time; exits non-zero (and keeps the crashing input in WORK_DIR) when the fuzzer finds a crash.
set -eu
fuzzer=$1 seeds=$2 work=$3 seconds=$4
rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
cp "$seeds"/* "$work/corpus/"
"$fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$work/corpus" 2>"$work/log" || {
    tail -n 40 "$work/log"; echo "fuzzer found a problem: see $work/artifacts"; exit 1; }
grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$work/log" || true
echo "no crash in $seconds s"
