//! The attach plan as it turned out: per family, every alternative with its status and reason.
//! Shown by `mmuscope check`, exported as `probe_attached`, served by the API.

use super::spec::{FamilyId, Hook, Mode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Attached,
    /// A need is not met on this kernel.
    Unavailable,
    /// Needs were met but loading or attaching failed.
    Failed,
    /// A preferred alternative attached, so this one was not tried.
    NotTried,
    /// Excluded by `--mode`.
    Excluded,
    /// A family off by default whose flag was not given ([`super::spec::Need::OptIn`]).
    Off,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Attached => "attached",
            Status::Unavailable => "unavailable",
            Status::Failed => "failed",
            Status::NotTried => "not tried",
            Status::Excluded => "excluded",
            Status::Off => "off",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AlternativeReport {
    pub name: &'static str,
    pub mode: Mode,
    pub status: Status,
    /// Why it is not attached (empty when attached).
    pub reason: String,
    /// What it attaches (or would attach) to.
    pub targets: Vec<&'static str>,
    /// Each program with its hook: what `targets` lists, with the hook kinds (the bench's floor puts empty
    /// programs on exactly these).
    pub hooks: Vec<HookReport>,
    pub degraded: &'static str,
}

/// One program of an alternative on one hook of this kernel.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HookReport {
    pub program: String,
    pub hook: Hook,
    /// Function, tracepoint name or `group:name`, `a|b` resolved.
    pub target: &'static str,
    /// `always`, or attached only while some mm has the has-pinned flag (`while_pinned`) or notifier subscriptions
    /// (`while_subscribed`), unless its group is kept attached for good (`probes::arming`).
    pub on_demand: super::spec::OnDemand,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FamilyReport {
    #[serde(rename = "name")]
    pub id: FamilyId,
    pub description: &'static str,
    pub required: bool,
    pub alternatives: Vec<AlternativeReport>,
}

impl FamilyReport {
    pub fn name(&self) -> &'static str {
        self.id.name()
    }

    pub fn attached(&self) -> Option<&AlternativeReport> {
        self.alternatives.iter().find(|a| a.status == Status::Attached)
    }

    /// Whether the family is off by default and its flag was not given: nothing attached, and an alternative is
    /// [`Status::Off`] (the others excluded by `--mode` or unavailable), so the flag its reason names would attach it.
    pub fn switched_off(&self) -> bool {
        self.attached().is_none() && self.alternatives.iter().any(|a| a.status == Status::Off)
    }

    /// Why nothing attached, alternative by alternative (`None` when one did).
    pub fn why_not_attached(&self) -> Option<String> {
        if self.attached().is_some() {
            return None;
        }
        let why: Vec<String> = self.alternatives.iter().map(|a| format!("{}: {}", a.name, a.reason)).collect();
        Some(why.join("; "))
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Capabilities {
    #[serde(serialize_with = "capability")]
    pub trampolines: Result<(), String>,
    #[serde(serialize_with = "capability")]
    pub kprobes: Result<(), String>,
    /// Whether a detached fentry program attaches again (`attach::probe_reattach`): where not, the families with
    /// hooks attached on demand are off in fentry mode unless `--probes.keep-attached` (`attach::not_on_demand`).
    #[serde(serialize_with = "capability")]
    pub reattach: Result<(), String>,
    /// Whether brackets read the system call or reclaim context of their cause (the cause-context fields and
    /// helpers); without it causes come from the caller hooks only (`unknown` otherwise).
    #[serde(serialize_with = "capability")]
    pub cause_context: Result<(), String>,
    /// Where classic tracepoints are attached from, or why nowhere.
    #[serde(serialize_with = "tracefs")]
    pub tracefs: Result<crate::kernel::Tracefs, String>,
}

/// `{"available": true}` or `{"available": false, "reason": "..."}`.
fn capability<S: serde::Serializer>(c: &Result<(), String>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    m.serialize_entry("available", &c.is_ok())?;
    if let Err(why) = c {
        m.serialize_entry("reason", why)?;
    }
    m.end()
}

/// `{"available": true, "path": "...", "mounted_by_agent": false}` or `{"available": false, "reason": "..."}`.
fn tracefs<S: serde::Serializer>(t: &Result<crate::kernel::Tracefs, String>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    m.serialize_entry("available", &t.is_ok())?;
    match t {
        Ok(t) => {
            m.serialize_entry("path", &t.path().display().to_string())?;
            m.serialize_entry("mounted_by_agent", &matches!(t, crate::kernel::Tracefs::Private(_)))?;
        }
        Err(why) => m.serialize_entry("reason", why)?,
    }
    m.end()
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PlanReport {
    pub kernel_release: String,
    pub btf_path: String,
    pub generation: crate::kernel::Generation,
    pub generation_description: &'static str,
    pub capabilities: Capabilities,
    pub families: Vec<FamilyReport>,
    /// The groups of hooks marked `on_demand` in `families`, as planned at load: switched with the inventory, or
    /// attached for good and why (`run` may add reasons later: `/api/v1/subscribers` says what holds now).
    pub on_demand: Vec<OnDemandReport>,
}

/// One group of on-demand hooks (`probes::arming`) as planned at load.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OnDemandReport {
    /// `fork_copy` (`while_pinned` hooks) or `subscriptions` (`while_subscribed` hooks).
    pub group: &'static str,
    /// Programs of the group that can be detached and attached again (0: none attached in a switchable mode).
    pub switched: usize,
    /// Why the group is attached for good, if it is.
    pub always: Option<String>,
}

impl PlanReport {
    /// The alternative family `id` attached with, if any.
    pub fn attached_alternative(&self, id: FamilyId) -> Option<&AlternativeReport> {
        self.families.iter().find(|f| f.id == id).and_then(|f| f.attached())
    }

    /// Whether family `id` attached with any alternative.
    pub fn attached(&self, id: FamilyId) -> bool {
        self.attached_alternative(id).is_some()
    }

    /// Whether family `id` attached in one of `modes`.
    pub fn attached_in(&self, id: FamilyId, modes: &[Mode]) -> bool {
        self.attached_alternative(id).is_some_and(|a| modes.contains(&a.mode))
    }

    /// Required families with nothing attached, except those off by default whose flag was not given (the operator's
    /// choice, shown as `off` with the flag).
    pub fn missing_required(&self) -> Vec<&'static str> {
        self.families
            .iter()
            .filter(|f| f.required && f.attached().is_none() && !f.switched_off())
            .map(|f| f.name())
            .collect()
    }

    /// Families attached with a fallback although a preferred alternative (not excluded by
    /// `--mode`) exists: they report less than the kernel could.
    pub fn degraded(&self) -> Vec<&'static str> {
        self.families
            .iter()
            .filter(|f| {
                let best = f.alternatives.iter().find(|a| !matches!(a.status, Status::Excluded | Status::Off));
                f.attached().is_some() && best.is_some_and(|b| b.status != Status::Attached)
            })
            .map(|f| f.name())
            .collect()
    }
}
