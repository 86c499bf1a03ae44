//! The progress lines every command prints: `==> mmuscope <scope>: <message>`.

use std::{fmt::Display, time::Duration};

pub fn say(scope: &str, message: impl Display) {
    println!("==> mmuscope {scope}: {message}");
}

/// Seconds with one decimal, as the summaries show them.
pub fn seconds(elapsed: Duration) -> String {
    format!("{:.1}", elapsed.as_secs_f64())
}
