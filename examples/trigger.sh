#!/usr/bin/env bash
# Scripted coordination: a script blocks until another process (maybe on another machine)
# fires a trigger.
#   waiting script:  skypipe recv deploy-done && ./next-step
#   elsewhere:       echo | skypipe send deploy-done
# (at a prompt, the bare `skypipe deploy-done` and `echo | skypipe deploy-done` do the same)
set -euo pipefail
pipe=go-example-$$

( skypipe recv "$pipe" >/dev/null && echo "waiter: woken by the trigger" ) &
waiter=$!
sleep 0.5
echo "trigger: firing"
echo | skypipe send "$pipe"
wait "$waiter"
