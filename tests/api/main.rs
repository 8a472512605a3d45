//! The integration suite: the real server over HTTP, on SQLite and on PostgreSQL.

mod helpers;

mod accessibility;
mod audit;
mod authorization;
mod browser;
mod cli;
mod csrf;
mod egress;
mod eras;
mod gateway;
mod headers;
mod health;
mod instances;
mod json_api;
mod keys;
mod limits;
mod login;
mod logs;
mod members;
mod operations;
mod organization;
mod password_reset;
mod recording;
mod reference_servers;
mod retention;
mod services;
mod sessions;
mod setup;
mod stdio;
mod telemetry;
mod tokens;
mod tool_policy;
mod upstream;
mod usage;
