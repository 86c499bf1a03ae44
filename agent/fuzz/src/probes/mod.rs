//! The agent's `probes` files this crate fuzzes (see ../lib.rs).

#[path = "../../../src/probes/needs.rs"]
pub mod needs;
#[path = "../../../src/probes/table.rs"]
pub mod table;
#[path = "../../../src/probes/causes.rs"]
pub mod causes;
#[path = "../../../src/probes/intervals.rs"]
pub mod intervals;
#[path = "../../../src/probes/overlaps.rs"]
pub mod overlaps;
#[path = "../../../src/probes/table_subscribers.rs"]
pub mod table_subscribers;
