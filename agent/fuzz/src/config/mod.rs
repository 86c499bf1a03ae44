//! The agent's `config` files this crate fuzzes (see ../lib.rs).

#[path = "../../../src/config/keys.rs"]
pub mod keys;
