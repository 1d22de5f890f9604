#!/bin/sh
# Where a server's time goes under the ping-pong load (50 connections, one
# 64-byte line in flight on each): perf stat (syscalls, context switches,
# io_uring requests, internal poll arms, io-wq punts) and perf record -g,
# the server on CPU 1, the load generator on CPU 0, as `make bench-compare`
# at one core places them. docs/tutorial/io-uring.md shows what it printed.
#
#   scripts/uring_perf.sh OUT SERVER [ARGS...]     ({addr} in ARGS is filled in)
#   scripts/uring_perf.sh target/perf-monoio target/peers/release/monoio-echo {addr}
#   scripts/uring_perf.sh target/perf-reactor target/release/reactor-echo --listen {addr} --log-level warn
#
# Writes OUT.stat (perf stat), OUT.report (perf report, top symbols) and
# OUT.load (the load generator's figures). Needs perf, taskset, and
# `make peers` first.
set -eu
out=$1
shift
addr=127.0.0.1:${PORT:-7420}
secs=${SECS:-3}
args=""
for a in "$@"; do
    args="$args $(printf '%s' "$a" | sed "s/{addr}/$addr/g")"
done
# shellcheck disable=SC2086 # the server's arguments, split on purpose
taskset -c 1 $args &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 0.5
taskset -c 0 target/release/loadgen "$addr" --depth 1 --conns 50 --size 64 \
    --secs $((2 * secs + 2)) --warmup 0.5 >"$out.load" &
load=$!
sleep 1
perf stat -x, -p "$server" -e raw_syscalls:sys_enter,context-switches,task-clock \
    -e io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work \
    -- sleep "$secs" 2>"$out.stat"
perf record -q -g -o "$out.data" -p "$server" -- sleep "$secs" 2>/dev/null
wait $load
perf report -q -i "$out.data" --no-children --sort symbol --percent-limit 1.5 --stdio \
    -g none 2>/dev/null >"$out.report"
tail -1 "$out.load"
cat "$out.stat"
head -25 "$out.report"
