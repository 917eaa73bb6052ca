#!/usr/bin/env bash
# Loads spindle-server with wrk (Debian package `wrk`) on 127.0.0.1 and prints, for each route and
# connection count, requests per second, the p50 and p99 latency and the server's CPU time per
# request, as one Markdown table from one run.
#
#   Examples/Server/load.sh [--connections "4 32 128"] [--duration 5] [--routes "inline dispatch …"]
#                           [--server-args "--workers 2"] [--check]
#
# --check: instead of loading, send a few requests to every route and compare each body with
# the serial render (what CI runs; a debug build).
set -euo pipefail
cd "$(dirname "$0")"
connections="4 32 128"
duration=5
routes="inline dispatch compute executor split split-dispatch"
server_args=""
check=false
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) connections=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --routes) routes=$2; shift 2 ;;
        --server-args) server_args=$2; shift 2 ;;
        --check) check=true; shift ;;
        *) echo "load.sh: unknown option $1" >&2; exit 64 ;;
    esac
done

# The check needs correct answers, not speed: a debug build (it compiles faster).
configuration=release
if $check; then configuration=debug; fi
swift build -c "$configuration" --product spindle-server >&2
server=.build/$configuration/spindle-server
port=$((20000 + RANDOM % 20000))
# The check fixes the render's spin rate in the server and in `--render` alike: the value of a
# render depends on it, and each process would calibrate its own.
if $check; then server_args="$server_args --rounds-per-us 300"; fi
# shellcheck disable=SC2086
"$server" --port "$port" $server_args >&2 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/render/inline?seed=1" && break
    sleep 0.1
done

if $check; then
    for route in $routes; do
        for seed in 0 7 355 1000 123456789; do
            got=$(curl -s --max-time 10 "http://127.0.0.1:$port/render/$route?seed=$seed")
            want=$("$server" --rounds-per-us 300 --render "$seed")
            if [ "$got" != "$want" ]; then
                echo "load.sh: /render/$route?seed=$seed answered '$got', expected '$want'" >&2
                exit 1
            fi
        done
        echo "ok /render/$route: 5 requests, every body matches the serial render"
    done
    exit 0
fi

command -v wrk >/dev/null || { echo "load.sh: wrk is needed (apt-get install wrk)" >&2; exit 1; }
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# A Lua script that gives every request its own seed.
lua=$(mktemp --suffix=.lua)
cat > "$lua" <<'LUA'
counter = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", wrk.path .. "?seed=" .. counter)
end
LUA

echo "| route | connections | requests/s | p50 | p99 | CPU per request |"
echo "|---|---:|---:|---:|---:|---:|"
for c in $connections; do
    for route in $routes; do
        before=$(cpu)
        out=$(wrk -t2 -c"$c" -d"${duration}s" --latency -s "$lua" "http://127.0.0.1:$port/render/$route")
        after=$(cpu)
        requests=$(echo "$out" | awk '/requests in/ {print $1}')
        rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
        p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
        per=$(awk -v d=$((after - before)) -v t="$ticks" -v n="$requests" 'BEGIN { printf "%.0f µs", d / t / n * 1e6 }')
        echo "| $route | $c | $rate | $p50 | $p99 | $per |"
    done
done
rm -f "$lua"
