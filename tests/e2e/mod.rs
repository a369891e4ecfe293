pub mod harness;

mod config;
mod core;
mod crypto;
mod examples;
mod follow;
