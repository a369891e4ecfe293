pub mod harness;

mod config;
mod core;
mod examples;
mod faults;
mod follow;
mod malformed;
mod monitor;
mod websocket;
