//! The agent's input parsers, compiled from the agent's own source files (`#[path]`), so the fuzz targets test
//! exactly the code the agent runs without making the agent a library. The module tree mirrors the agent's where
//! the files refer to each other (`crate::kernel::…`, `super::table`).
#![allow(dead_code, unused_imports)]

#[path = "../../src/kernel/mod.rs"]
pub mod kernel;

pub mod cgroups;
pub mod config;
pub mod probes;
pub mod webconfig;
