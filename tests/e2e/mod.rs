pub mod harness;

mod auth;
mod cluster;
mod config;
mod core;
mod service;
