//! Endpoints whose data the kernel side does not collect yet: they answer 200 with `available: false`, an explicit
//! note and an empty list — never made-up data, and never a 5xx.

use serde::Serialize;
use utoipa::ToSchema;

/// `GET /api/v1/subscribers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscribersView {
    /// False until the subscriber inventory probes exist; the list is then always empty.
    pub available: bool,
    pub note: String,
    pub subscribers: Vec<SubscriberView>,
}

/// One mmu_notifier subscriber kind and where it is registered.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberView {
    /// Callback owner, e.g. `kvm`.
    pub subscriber: String,
    /// Memory cgroup path of the mm.
    pub cgroup: String,
    /// Address spaces with this subscriber.
    pub mms: u64,
}

pub const SUBSCRIBERS_NOTE: &str = "The subscriber inventory (which mms have which mmu_notifier subscribers) is not \
    collected by this version of the agent; this list stays empty until it is.";
