#!/usr/bin/env bash
# A job queue: queue nine jobs, three workers each take jobs until the queue is empty. Each
# job goes to exactly one worker.
set -euo pipefail
pipe=jobs-example-$$
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for n in $(seq 1 9); do
  echo "job $n" | skypipe send "$pipe"
done

worker() {
  # Take one job at a time; an empty queue for 2 s ends the worker (exit 124).
  while job=$(skypipe recv "$pipe" --timeout 2s); do
    echo "worker $1 took $job" >>"$log"
  done
}
worker A & worker B & worker C &
wait

sort -k5 -n "$log"
echo "$(wc -l <"$log") jobs taken, $(sort -u -k4 "$log" | wc -l) distinct"
