//! The agent's `probes` files this crate fuzzes (see ../lib.rs).

#[path = "../../../src/probes/needs.rs"]
pub mod needs;
#[path = "../../../src/probes/table.rs"]
pub mod table;
