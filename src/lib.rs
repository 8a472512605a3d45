//! MCP Platform: a gateway for Model Context Protocol services and the dashboard that runs it.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod ids;
pub mod routes;
pub mod seed;
pub mod telemetry;
pub mod web;
