#!/usr/bin/env bash
# Footprint of a gateway's `tidegate run`: 24 sensors (six ponds of four, on the
# simulated bus), the default schedule (heartbeat 30 s, sample 5 min, upload 1 h,
# cleanup daily), connected to an MQTT broker. Resident memory and CPU time are read
# from /proc at 5 s and at the end; CPU is also given per hour.
#
#   benches/footprint.sh [SECONDS] [MQTT_URL]    # defaults: 3600 mqtt://127.0.0.1:1883
set -euo pipefail
secs=${1:-3600}
url=${2:-mqtt://127.0.0.1:1883}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=${CARGO_TARGET_DIR:-$root/target}/release/tidegate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

{
    printf '[agent]\nid = "bench-footprint"\nsite = "bench"\nstate_dir = "%s/state"\n' "$work"
    printf 'log_dir = "%s/logs"\ntimezone = "UTC"\nclock = "trusted"\n\n' "$work"
    printf '[mqtt]\nurl = "%s"\n\n[[bus]]\nname = "sim"\nkind = "simulated"\n' "$url"
    for pond in 1 2 3 4 5 6; do
        for q in "do mg/L 7.5" "temp degC 18.0" "ph pH 7.8" "salinity ppt 32.0"; do
            set -- $q
            printf '\n[[sensor]]\nid = "pond%s.%s"\nbus = "sim"\nunit = "%s"\nmodel = { base = %s, amplitude = 1.0, period = "24h", noise = 0.05 }\n' \
                "$pond" "$1" "$2" "$3"
        done
    done
} >"$work/footprint.toml"
"$bin" check-config --config "$work/footprint.toml" >/dev/null

"$bin" run --config "$work/footprint.toml" 2>"$work/agent.log" &
pid=$!
clk=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; } # utime + stime, clock ticks
sample() {
    printf '%s VmRSS=%s kB VmHWM=%s kB cpu=%s s threads=%s\n' "$1" \
        "$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")" \
        "$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")" \
        "$(awk -v t="$(ticks)" -v c="$clk" 'BEGIN {printf "%.2f", t / c}')" \
        "$(awk '/^Threads/ {print $2}' "/proc/$pid/status")"
}

sleep 5
sample "t=5s:"
grep -q "connected to the broker\|mqtt.*connected" "$work/agent.log" ||
    echo "warning: no broker connection in the log after 5 s" >&2
start=$(ticks)
sleep "$((secs - 5))"
sample "t=${secs}s:"
end=$(ticks)
awk -v a="$start" -v b="$end" -v c="$clk" -v s="$((secs - 5))" 'BEGIN {
    cpu = (b - a) / c
    printf "cpu over the last %d s: %.2f s, %.2f s per hour (%.4f %% of one core)\n", s, cpu, cpu * 3600 / s, 100 * cpu / s
}'
kill -TERM "$pid"
wait "$pid"
echo "runs: $(grep -c 'run succeeded' "$work/agent.log") succeeded, $(grep -c 'run failed' "$work/agent.log") failed"
echo "readings stored: $("$bin" buffer stats --config "$work/footprint.toml" | awk '$1 == "pending" {print $2 + 0}')"
