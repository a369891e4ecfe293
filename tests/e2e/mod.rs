pub mod harness;

mod auth;
mod cluster;
mod config;
mod core;
mod crypto;
mod examples;
mod faults;
mod follow;
mod malformed;
mod monitor;
mod proxy;
mod service;
mod websocket;
