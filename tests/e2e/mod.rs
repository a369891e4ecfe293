pub mod harness;

mod auth;
mod config;
mod core;
mod service;
