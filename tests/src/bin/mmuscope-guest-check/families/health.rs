//! The agent's own error counters: in a guest that runs only the scenario, every bracket has a start the agent
//! saw (it attached before the workload began), no start fails (nothing runs the OOM reaper), every kernel read
//! succeeds and every map has room. So each must stay at zero during every scenario; any growth means events the
//! other families silently lost or misattributed.

use super::{Check, Expectations};

pub const UNMATCHED_ENDS: &str = "mmuscope_unmatched_bracket_ends_total";
pub const START_FAILURES: &str = "mmuscope_invalidation_start_failures_total";
pub const READ_ERRORS: &str = "mmuscope_probe_read_errors_total";
pub const MAP_UPDATE_ERRORS: &str = "mmuscope_map_update_errors_total";

pub fn expect(out: &mut Expectations) {
    for metric in [UNMATCHED_ENDS, START_FAILURES, READ_ERRORS, MAP_UPDATE_ERRORS] {
        out.checks.push(Check::agent_wide(metric, 0));
    }
}
