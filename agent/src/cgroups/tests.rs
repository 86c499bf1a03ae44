//! The index against real directory trees standing in for cgroupfs and the kubelet's files.

use std::{os::unix::fs::MetadataExt, path::Path};

use super::*;

struct Fixture {
    base: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let base = std::env::temp_dir().join(format!("mmuscope-cg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("cgroup")).unwrap();
        Self { base }
    }
    fn cgroups(&self) -> PathBuf {
        self.base.join("cgroup")
    }
    fn mkdir(&self, rel: &str) -> u64 {
        let p = self.cgroups().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::metadata(&p).unwrap().ino()
    }
    fn names(&self, policy: Policy) -> CgroupNames {
        let h = Hierarchies { default: None, memory: Some(Hierarchy { mount: self.cgroups(), root: "/".into() }) };
        CgroupNames::with_host_root(h, policy, &self.base)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn get<'a>(l: &CgroupLabels<'a>, name: &str) -> &'a str {
    CgroupLabels::NAMES.iter().zip(l.values()).find(|(n, _)| **n == name).map(|(_, v)| v).unwrap()
}

const UNLIMITED: Policy = Policy { max_cgroups: None, deleted_ttl: Duration::from_secs(300) };

#[test]
fn plain_paths_have_empty_kubernetes_labels() {
    let f = Fixture::new("plain");
    let a = f.mkdir("system.slice/libvirtd.service");
    let mut n = f.names(UNLIMITED);
    n.resolve_all([(HierarchyKind::Memory, a), (HierarchyKind::Memory, 999_999_999)]);
    let l = n.labels(HierarchyKind::Memory, a);
    assert_eq!(l.text, r#"cgroup="/system.slice/libvirtd.service",namespace="",pod="",container="""#);
    assert_eq!(get(&l, "cgroup"), "/system.slice/libvirtd.service");
    assert_eq!((get(&l, "namespace"), get(&l, "pod"), get(&l, "container")), ("", "", ""));
    assert_eq!(get(&n.labels(HierarchyKind::Memory, 999_999_999), "cgroup"), UNKNOWN);
    assert_eq!(get(&n.labels(HierarchyKind::Memory, 0), "cgroup"), UNKNOWN);
    // The default hierarchy is not mounted in this fixture: its ids stay unknown.
    n.resolve_all([(HierarchyKind::Default, a)]);
    assert_eq!(n.name(HierarchyKind::Default, a), UNKNOWN);
}

#[test]
fn kubernetes_names_from_the_kubelet_files_and_fallbacks() {
    let f = Fixture::new("k8s");
    let uid = "8f3a2b1c-4d5e-6f70-8192-a3b4c5d6e7f8";
    let cid = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e";
    let pod_slice =
        format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
    let container = f.mkdir(&format!("{pod_slice}/cri-containerd-{cid}.scope"));
    let pod = f.mkdir(&pod_slice);
    let mut n = f.names(UNLIMITED);
    // Before the kubelet wrote its files: UID and short id.
    n.resolve_all([(HierarchyKind::Memory, container), (HierarchyKind::Memory, pod)]);
    let l = n.labels(HierarchyKind::Memory, container);
    assert_eq!((get(&l, "namespace"), get(&l, "pod"), get(&l, "container")), ("", uid, "3f4e5d6c7b8a"));
    // The kubelet's log files appear: names on the next resolution.
    std::fs::create_dir_all(f.base.join(format!("var/log/pods/shop_cart-6d9f_{uid}"))).unwrap();
    std::fs::create_dir_all(f.base.join("var/log/containers")).unwrap();
    std::fs::write(f.base.join(format!("var/log/containers/cart-6d9f_shop_cart-{cid}.log")), "").unwrap();
    n.resolve_all([(HierarchyKind::Memory, container), (HierarchyKind::Memory, pod)]);
    let l = n.labels(HierarchyKind::Memory, container);
    assert_eq!((get(&l, "namespace"), get(&l, "pod"), get(&l, "container")), ("shop", "cart-6d9f", "cart"));
    let l = n.labels(HierarchyKind::Memory, pod);
    assert_eq!((get(&l, "namespace"), get(&l, "pod"), get(&l, "container")), ("shop", "cart-6d9f", ""));
    assert_eq!(n.info(HierarchyKind::Memory, pod).unwrap().kubernetes.as_ref().unwrap().qos, Qos::Burstable);
}

#[test]
fn max_cgroups_aggregates_into_other() {
    let f = Fixture::new("cap");
    let ids: Vec<u64> = (0..5).map(|i| f.mkdir(&format!("c{i}"))).collect();
    let mut n = f.names(Policy { max_cgroups: Some(3), ..UNLIMITED });
    n.resolve_all(ids.iter().map(|id| (HierarchyKind::Memory, *id)));
    let others = ids.iter().filter(|id| n.name(HierarchyKind::Memory, **id) == OTHER).count();
    assert_eq!((others, n.tracked(), n.overflow_total()), (2, 3, 2));
    let other = ids.iter().find(|id| n.is_aggregated(HierarchyKind::Memory, **id)).unwrap();
    let l = n.labels(HierarchyKind::Memory, *other);
    assert_eq!(l.values(), [OTHER, "", "", ""]);
    assert_eq!(l.text, r#"cgroup="other",namespace="",pod="",container="""#);
    n.resolve_all(ids.iter().map(|id| (HierarchyKind::Memory, *id)));
    assert_eq!(n.overflow_total(), 2, "the same cgroups are not counted twice");
}

#[test]
fn deleted_cgroups_expire_after_the_ttl() {
    let f = Fixture::new("ttl");
    // The one slot goes to the lower id. Inode numbers are reused (other tests remove directories meanwhile), so
    // `b` may get the lower one: name them by id order.
    let (x, y) = (f.mkdir("x"), f.mkdir("y"));
    let ((a_name, a), (b_name, b)) = if x < y { (("x", x), ("y", y)) } else { (("y", y), ("x", x)) };
    let policy = Policy { max_cgroups: Some(1), deleted_ttl: Duration::from_secs(10) };
    let mut n = f.names(policy);
    let t0 = Instant::now();
    n.resolve_at([(HierarchyKind::Memory, a), (HierarchyKind::Memory, b)], t0);
    assert_eq!(n.name(HierarchyKind::Memory, b), OTHER);
    std::fs::remove_dir(f.cgroups().join(a_name)).unwrap();
    // Noticed at the next rescan; the label stays until the TTL has passed.
    let t1 = t0 + policy.rescan_interval();
    n.resolve_at([(HierarchyKind::Memory, a), (HierarchyKind::Memory, b)], t1);
    let info = n.info(HierarchyKind::Memory, a).unwrap();
    assert_eq!((info.path.as_str(), info.deleted_at), (format!("/{a_name}").as_str(), Some(t1)));
    assert!(!info.expired(t1, policy.deleted_ttl) && info.expired(t1 + policy.deleted_ttl, policy.deleted_ttl));
    assert_eq!(n.name(HierarchyKind::Memory, a), format!("/{a_name}"));
    // After the TTL /a no longer holds its slot; /b stays in other (sticky), nothing new overflows.
    n.resolve_at([(HierarchyKind::Memory, a), (HierarchyKind::Memory, b)], t1 + policy.deleted_ttl);
    assert_eq!((n.tracked(), n.overflow_total()), (0, 1));
    assert_eq!(n.name(HierarchyKind::Memory, b), OTHER);
    assert!(Path::new(&f.cgroups()).join(b_name).exists());
}

#[test]
fn unused_cgroups_are_forgotten_when_deleted() {
    let f = Fixture::new("forget");
    let a = f.mkdir("a");
    let b = f.mkdir("b");
    let mut n = f.names(UNLIMITED);
    let t0 = Instant::now();
    n.resolve_at([(HierarchyKind::Memory, a)], t0);
    std::fs::remove_dir(f.cgroups().join("b")).unwrap();
    n.resolve_at([(HierarchyKind::Memory, a)], t0 + Duration::from_secs(3600));
    assert!(n.info(HierarchyKind::Memory, b).is_none());
    assert!(n.info(HierarchyKind::Memory, a).is_some_and(|i| i.deleted_at.is_none()));
}

#[test]
fn expired_cgroups_are_forgotten_once_their_keys_are_gone() {
    let f = Fixture::new("expire-forget");
    let a = f.mkdir("a");
    let policy = Policy { max_cgroups: None, deleted_ttl: Duration::from_millis(0) };
    let mut n = f.names(policy);
    n.resolve_all([(HierarchyKind::Memory, a)]);
    // Still live: forgetting it is refused.
    n.forget_expired([(HierarchyKind::Memory, a)]);
    assert!(n.info(HierarchyKind::Memory, a).is_some());
    std::fs::remove_dir(f.cgroups().join("a")).unwrap();
    std::thread::sleep(policy.rescan_interval());
    n.resolve_all([(HierarchyKind::Memory, a)]);
    assert!(n.info(HierarchyKind::Memory, a).is_some_and(|i| i.deleted_at.is_some()), "noticed as deleted, kept");
    assert!(!n.liveness()(HierarchyKind::Memory, a), "expired (TTL 0)");
    n.forget_expired([(HierarchyKind::Memory, a)]);
    assert!(n.info(HierarchyKind::Memory, a).is_none());
}

/// Series are ordered by the ranks of their cgroup labels: the ranks must order as the values do (`other` and
/// `unknown` included), equal label sets sharing one.
#[test]
fn label_ranks_order_as_the_values() {
    let f = Fixture::new("ranks");
    // Created in an order unlike the paths' (ids grow with creation), with a path that sorts before its prefix's
    // sibling by value but not by the rendered text (`/b` < `/b c` although `"` > ` `).
    let ids: Vec<u64> = ["b c", "a", "b", "b\\q", "c"].iter().map(|p| f.mkdir(p)).collect();
    let mut n = f.names(Policy { max_cgroups: Some(4), ..UNLIMITED });
    let mut keys: Vec<(HierarchyKind, u64)> = ids.iter().map(|id| (HierarchyKind::Memory, *id)).collect();
    keys.push((HierarchyKind::Memory, 999_999_999)); // unknown
    n.resolve_all(keys.iter().copied());
    let labels: Vec<CgroupLabels<'_>> = keys.iter().map(|(w, id)| n.labels(*w, *id)).collect();
    for a in &labels {
        for b in &labels {
            assert_eq!(a.rank().cmp(&b.rank()), a.values().cmp(&b.values()), "{a:?} vs {b:?}");
        }
    }
    // One cgroup is over the cap (which depends on the inode numbers): it shows (and ranks) as `other`.
    let other: Vec<_> = labels.iter().filter(|l| l.cgroup == OTHER).collect();
    assert_eq!(other.len(), 1);
    assert!(other[0].rank() < labels[5].rank(), "other < unknown");
    if let Some(l) = labels.iter().find(|l| l.cgroup == "/b\\q") {
        assert_eq!(l.text, r#"cgroup="/b\\q",namespace="",pod="",container="""#, "escaped once, when rendered");
    }
}

#[test]
fn a_cgroup_learned_at_creation_keeps_its_name_after_removal() {
    let f = Fixture::new("births");
    let mut n = f.names(UNLIMITED);
    // Known to a walk before it exists: a scrape happened earlier.
    n.resolve_all([]);
    let id = f.mkdir("system.slice/fleet-kvm.scope");
    assert_eq!(n.learn("/system.slice/fleet-kvm.scope"), 1);
    // The scope ends before the next scrape; its brackets are in the maps.
    std::fs::remove_dir(f.cgroups().join("system.slice/fleet-kvm.scope")).unwrap();
    // Force the walk that used to forget it (a miss of another id).
    n.resolve_all([(HierarchyKind::Memory, id), (HierarchyKind::Memory, 999_999_999)]);
    assert_eq!(n.name(HierarchyKind::Memory, id), "/system.slice/fleet-kvm.scope");
    assert!(n.info(HierarchyKind::Memory, id).unwrap().deleted_at.is_some(), "noticed as deleted");
    // Gone before it could be looked up, or outside the mount: nothing learned.
    assert_eq!(n.learn("/system.slice/never-made.scope"), 0);
}

#[test]
fn learned_paths_are_taken_below_the_mount_root() {
    assert_eq!(below_root("/kubepods/pod1/c", "/kubepods"), Some("pod1/c"));
    assert_eq!(below_root("/kubepods", "/kubepods"), Some(""));
    assert_eq!(below_root("/kubepods-x/a", "/kubepods"), None);
    assert_eq!(below_root("/a/b", "/"), Some("a/b"));
    assert_eq!(below_root("/other", "/kubepods"), None);
}
