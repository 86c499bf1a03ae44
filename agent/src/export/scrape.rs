//! One `/metrics` response: the map-based families ([`Exporter`]), our eBPF programs' run-time statistics, and the
//! prometheus crate's process collector (`process_*`), written as one text exposition in family-name order.

use std::sync::Arc;

use prometheus::{Encoder, TextEncoder, core::Collector, process_collector::ProcessCollector};

use super::{Exporter, programs, text};
use crate::bpfstats::ProgramStats;

pub struct Scrape {
    exporter: Arc<Exporter>,
    programs: ProgramStats,
    process: ProcessCollector,
}

impl Scrape {
    pub fn new(exporter: Arc<Exporter>, programs: ProgramStats) -> Self {
        Self { exporter, programs, process: ProcessCollector::for_self() }
    }

    /// One collection, appended to `out`.
    pub fn render(&self, out: &mut Vec<u8>) {
        // Read first and on their own, so that reading program infos never fails the map-based families.
        let runs = self.programs.read();
        let process = process_families(&self.process);
        let families = programs::families(&runs, self.programs.enabled());
        self.exporter.collect(families, |families| text::write(out, families, &process));
    }
}

/// The process collector's families, each encoded by the prometheus crate, by name (empty ones left out, as its
/// registry leaves them out).
fn process_families(collector: &ProcessCollector) -> Vec<text::Encoded> {
    let mut encoded: Vec<text::Encoded> = collector
        .collect()
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .filter_map(|f| {
            let mut text = Vec::new();
            match TextEncoder::new().encode(std::slice::from_ref(&f), &mut text) {
                Ok(()) => Some(text::Encoded { name: f.name().to_string(), text }),
                Err(e) => {
                    tracing::warn!(family = f.name(), "encoding a process metric failed: {e}");
                    None
                }
            }
        })
        .collect();
    encoded.sort_by(|a, b| a.name.cmp(&b.name));
    encoded
}
