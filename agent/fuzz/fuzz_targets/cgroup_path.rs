//! Cgroup paths (any string the kernel's cgroupfs could hold) → Kubernetes pod/container, and mountinfo → the
//! cgroup hierarchies: no panic, and what is parsed out is a part of the input (ids in lower case).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmuscope::cgroups::{kubernetes, mounts::Hierarchies};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(pod) = kubernetes::parse(text) {
        assert_eq!(pod.pod_uid.len(), 36, "pod uid {:?} from {text:?}", pod.pod_uid);
        if let Some(id) = &pod.container_id {
            // Ids are reported in lower case (runtimes print them so), whatever case the path has.
            assert!(text.to_ascii_lowercase().contains(id.as_str()), "container id {id:?} not in {text:?}");
            assert!(id.starts_with(kubernetes::short_id(id)));
        }
    }
    let _ = Hierarchies::parse(text);
});
