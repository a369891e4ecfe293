pub mod harness;

mod auth;
mod cluster;
mod compat;
mod config;
mod core;
mod crypto;
mod examples;
mod faults;
mod follow;
mod malformed;
mod monitor;
mod proxy;
mod scale;
mod security;
mod service;
mod truth;
mod websocket;
