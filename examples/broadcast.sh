#!/usr/bin/env bash
# Broadcast: several listeners tap a pipe live; each gets a copy, and the one taker gets the
# payload as if nobody listened.
set -euo pipefail
pipe=news-example-$$
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

for l in 1 2 3; do
  skypipe recv "$pipe" --listen >"$dir/listener$l" &
done
skypipe recv "$pipe" >"$dir/taker" &
sleep 0.5
echo "hello, everyone" | skypipe send "$pipe"
wait

for f in listener1 listener2 listener3 taker; do
  echo "$f got: $(cat "$dir/$f")"
done
