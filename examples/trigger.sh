#!/usr/bin/env bash
# Scripted coordination: a script blocks until another process (maybe on another machine)
# fires a trigger.
#   waiting script:  skypipe deploy-done && ./next-step
#   elsewhere:       echo | skypipe deploy-done
set -euo pipefail
pipe=go-example-$$

( skypipe "$pipe" >/dev/null && echo "waiter: woken by the trigger" ) &
waiter=$!
sleep 0.5
echo "trigger: firing"
echo | skypipe "$pipe"
wait "$waiter"
