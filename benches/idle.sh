#!/usr/bin/env bash
# Idle footprint of `tidegate run` on config/demo.toml: resident memory and CPU time
# over a stretch of wall time (default 600 s), read from /proc.
#
#   benches/idle.sh [SECONDS]
set -euo pipefail
secs=${1:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/config/demo.toml" "$work/"
cd "$work"
"$root/target/release/tidegate" run --config demo.toml 2>"$work/agent.log" &
pid=$!
clk=$(getconf CLK_TCK)

sample() {
    local rss hwm ticks
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    # Fields 14 and 15 of /proc/PID/stat are utime and stime in clock ticks.
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    printf '%s VmRSS=%s kB VmHWM=%s kB cpu=%s s threads=%s\n' "$1" "$rss" "$hwm" \
        "$(awk -v t="$ticks" -v c="$clk" 'BEGIN {printf "%.2f", t / c}')" \
        "$(awk '/^Threads/ {print $2}' "/proc/$pid/status")"
}

sleep 5
sample "t=5s:"
start_ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
sleep "$((secs - 5))"
sample "t=${secs}s:"
end_ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
awk -v a="$start_ticks" -v b="$end_ticks" -v c="$clk" -v s="$((secs - 5))" \
    'BEGIN {printf "cpu over the last %d s: %.2f s (%.3f %% of one core)\n", s, (b - a) / c, 100 * (b - a) / c / s}'
kill -TERM "$pid"
wait "$pid"
echo "runs recorded: $(grep -c 'run succeeded' agent.log)"
