pub mod harness;

mod config;
mod core;
mod crypto;
mod examples;
mod faults;
mod follow;
mod malformed;
mod monitor;
mod websocket;
