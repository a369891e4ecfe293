//! End-to-end tests: the real `skypipe` binary against real `nats-server`s, one per test.

mod e2e;
