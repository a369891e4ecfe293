pub mod harness;

mod config;
mod core;
mod service;
