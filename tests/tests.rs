//! End-to-end tests: the real `skypipe` binary against real `nats-server`s, one per test.
//! One binary; its modules share the harness freely.
#![allow(unreachable_pub)]

mod e2e;
