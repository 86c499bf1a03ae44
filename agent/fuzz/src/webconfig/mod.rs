//! The agent's `webconfig` files this crate fuzzes (see ../lib.rs).

#[path = "../../../src/webconfig/file.rs"]
pub mod file;
