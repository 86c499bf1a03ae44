//! Readiness for systemd (`Type=notify`): READY=1 once the probes are attached and privileges dropped, with the
//! attach plan as STATUS= (`systemctl status mmuscope` shows it). Without NOTIFY_SOCKET (not started by systemd)
//! this does nothing.

use sd_notify::NotifyState;

use crate::probes::PlanReport;

pub fn ready(report: &PlanReport) {
    let status = super::describe(report);
    match sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
        Ok(()) => tracing::debug!("{status}"),
        // systemd would then time the start out and say so; the log says why.
        Err(e) => tracing::warn!("telling systemd we are ready failed: {e}"),
    }
}
