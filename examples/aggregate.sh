#!/usr/bin/env bash
# Log aggregation: several hosts stream their logs into one pipe, one aggregator takes them all.
#   on each host:        tail -f /var/log/app.log | skypipe send logs
#   on the aggregator:   skypipe recv logs --follow > /var/log/aggregate
# (in a script, say `send` or `recv`: the bare `skypipe logs` refuses to guess there)
# Here three "hosts" are three background senders on this machine. Needs skypipe on PATH and a
# server (NATS_URL, a context, or the local default).
set -euo pipefail
pipe=logs-example-$$
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# The aggregator: takes every payload as it comes; stops after 3 s of silence (exit 124).
skypipe recv "$pipe" --follow --timeout 3s >"$out" &
aggregator=$!
sleep 0.5

# Three senders, each a stream of numbered lines, running at the same time.
senders=()
for host in web1 web2 db1; do
  (for i in $(seq 1 100); do echo "$host: request $i"; done | skypipe send "$pipe") &
  senders+=($!)
done
wait "${senders[@]}"
wait "$aggregator" || [ $? -eq 124 ]

echo "aggregated $(wc -l <"$out") lines from 3 senders"
for host in web1 web2 db1; do
  echo "$host: $(grep -c "^$host: " "$out") lines, in order: $(grep "^$host: " "$out" | awk '{print $3}' | sort -n -c 2>/dev/null && echo yes || echo no)"
done
