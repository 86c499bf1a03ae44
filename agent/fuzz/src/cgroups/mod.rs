//! The agent's `cgroups` files this crate fuzzes (see ../lib.rs).

#[path = "../../../src/cgroups/kubernetes.rs"]
pub mod kubernetes;
#[path = "../../../src/cgroups/mounts.rs"]
pub mod mounts;
