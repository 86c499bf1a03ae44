//! The label set of a cgroup-keyed series (`cgroup`, `namespace`, `pod`, `container`): values borrowed from the
//! index, ordered as the exposition orders series, and rendered once as exposition text.

/// The `cgroup`, `namespace`, `pod`, `container` label values of a series, borrowed from the index. Ordered as the
/// exposition orders series: by value, in label order.
#[derive(Clone, Copy, Debug)]
pub struct CgroupLabels<'a> {
    pub cgroup: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    /// The position of these values among all label sets the index shows (see `CgroupNames::rank_labels`), so
    /// that ordering series compares integers, not paths. 0 for label sets made with [`new`](Self::new): then the
    /// values decide. Label sets of the two kinds are never compared with each other.
    pub(super) rank: u32,
    /// The four pairs as the text exposition writes them (`cgroup="…",namespace="…",…`), rendered when the index
    /// changes rather than for every series of every scrape; empty for label sets made with [`new`](Self::new).
    pub text: &'a str,
}

impl<'a> CgroupLabels<'a> {
    pub const NAMES: [&'static str; 4] = ["cgroup", "namespace", "pod", "container"];

    /// Labels from outside the index (tests, the metrics reference).
    pub const fn new(cgroup: &'a str, namespace: &'a str, pod: &'a str, container: &'a str) -> Self {
        Self { cgroup, namespace, pod, container, rank: 0, text: "" }
    }

    /// The position among the index's label sets (0 outside the index), for sorting.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The values in [`NAMES`](Self::NAMES) order.
    pub fn values(&self) -> [&'a str; 4] {
        [self.cgroup, self.namespace, self.pod, self.container]
    }
}

impl Ord for CgroupLabels<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank).then_with(|| self.values().cmp(&other.values()))
    }
}

impl PartialOrd for CgroupLabels<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for CgroupLabels<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for CgroupLabels<'_> {}

/// A label set that is not a cgroup's own, with its rank and text (see [`CgroupLabels`]).
pub(super) struct ShownLabels {
    value: &'static str,
    pub(super) rank: u32,
    text: String,
}

impl ShownLabels {
    pub(super) fn new(value: &'static str) -> Self {
        Self { value, rank: 0, text: label_text(&CgroupLabels::new(value, "", "", "")) }
    }

    pub(super) fn labels(&self) -> CgroupLabels<'_> {
        CgroupLabels { rank: self.rank, text: &self.text, ..CgroupLabels::new(self.value, "", "", "") }
    }
}

/// The cgroup label pairs as the exposition writes them in a series, without the braces: what [`CgroupLabels::text`]
/// caches.
pub(super) fn label_text(labels: &CgroupLabels<'_>) -> String {
    let (mut out, mut separator) = (Vec::new(), b'{');
    for (n, v) in CgroupLabels::NAMES.iter().zip(labels.values()) {
        crate::exposition::pair(&mut out, &mut separator, format!("{n}=\"").as_bytes(), v);
    }
    out.remove(0); // the `{`
    String::from_utf8(out).expect("escaping keeps UTF-8")
}
