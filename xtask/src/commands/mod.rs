//! One file per `cargo xtask` command; each does its part of the set-up first.

pub mod build;
pub mod docs;
pub mod fuzz;
pub mod run;
pub mod setup;
pub mod soak;
pub mod test;
