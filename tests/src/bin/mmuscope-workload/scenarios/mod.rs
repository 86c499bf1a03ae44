//! One module per scenario. Each `run` enters a fresh cgroup first (see `crate::cgroups`), drives the kernel, tears
//! its VMs down deliberately and returns the ground truth; `main` prints it.
//!
//! Rule for exactness: between `KVM_CREATE_VM` and the VM's destruction a scenario allocates, frees, prints and maps
//! nothing beyond the invalidations it counts. Every allocation happens before, every print after.

pub mod kvm_madvise;
