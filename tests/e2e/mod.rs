pub mod harness;

mod config;
mod core;
mod examples;
mod follow;
mod websocket;
