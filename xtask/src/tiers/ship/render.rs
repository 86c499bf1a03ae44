//! The dashboards drawn from the live Prometheus answers and photographed by headless chromium (Debian package
//! chromium) into `docs/images/<dashboard>.png`, so the README shows what an operator sees. Grafana cannot be
//! installed here; `scripts/render.html` lays the panels out on Grafana's grid and draws them with Chart.js.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{dashboards, live::Results, say, tools::Tools};
use crate::{process, workspace::Workspace};

const PAGE: &str = include_str!("scripts/render.html");
const WIDTH: u64 = 1600;
/// Pixels per Grafana grid row and the page header (as in render.html).
const ROW: u64 = 36;
const HEADER: u64 = 44;

pub fn all(ws: &Workspace, tools: &Tools, results: &Results) -> Result<()> {
    let dir = ws.target_dir().join("ship/render");
    fs::create_dir_all(&dir)?;
    for (file, script) in [
        ("chart.umd.min.js", "chart.js/dist/chart.umd.min.js"),
        ("chartjs-chart-matrix.min.js", "chartjs-chart-matrix/dist/chartjs-chart-matrix.min.js"),
    ] {
        fs::copy(tools.node_modules().join(script), dir.join(file)).with_context(|| format!("copying {script}"))?;
    }
    let images = ws.root.join("docs/images");
    fs::create_dir_all(&images)?;
    let when = format!(
        "{} s of data: this host live (tracepoint mode) + Debian 6.1 and 6.12 guests (fentry mode, backfilled)",
        (results.end - results.start).round()
    );
    for d in &results.dashboards {
        let dash = dashboards::load(ws, d.file)?;
        let mut panels = Vec::new();
        let mut bottom = 0;
        for p in dash["panels"].as_array().into_iter().flatten() {
            let grid = &p["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap_or(0));
            bottom = bottom.max(y + h);
            let mut out = json!({"type": p["type"], "title": p["title"], "x": x, "y": y, "w": w, "h": h});
            if p["type"] != "row" {
                let data = d.panels.iter().find(|pd| pd.panel["id"] == p["id"]).context("panel without data")?;
                out["unit"] = p["fieldConfig"]["defaults"]["unit"].clone();
                out["stack"] = json!(p["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal");
                out["thresholds"] = p["fieldConfig"]["defaults"]["thresholds"]["steps"].clone();
                out["targets"] = p["targets"].clone();
                out["data"] = Value::Array(data.data.clone());
                let organize = p["transformations"].as_array().into_iter().flatten().find(|t| t["id"] == "organize");
                out["organize"] = organize.map_or(Value::Null, |t| t["options"].clone());
            }
            panels.push(out);
        }
        let data = json!({"title": d.title, "subtitle": when, "start": results.start, "end": results.end,
                          "panels": panels});
        let stem = d.file.trim_end_matches(".json");
        let page = dir.join(format!("{stem}.html"));
        fs::write(&page, PAGE.replace("/*DATA*/null", &data.to_string()))?;
        let png = images.join(format!("{stem}.png"));
        screenshot(&page, &png, HEADER + bottom * ROW + 8, &dir)?;
        say(format!("rendered {} ({} panels) → {}", d.title, d.panels.len(), ws.display(&png)));
    }
    Ok(())
}

fn screenshot(page: &Path, png: &Path, height: u64, scratch: &Path) -> Result<()> {
    let profile = scratch.join("chromium-profile");
    let _ = fs::remove_dir_all(&profile);
    let _ = fs::remove_file(png);
    let mut cmd = Command::new("chromium");
    // The flags that keep chromium off the (closed) network and away from a user profile; virtual time lets the
    // scripts finish drawing before the picture is taken.
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--hide-scrollbars", "--force-device-scale-factor=1", "--virtual-time-budget=10000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={WIDTH},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()));
    let out = process::capture(&mut cmd).context("chromium (Debian package chromium)")?;
    if !png.is_file() {
        bail!("chromium wrote no {} ({}): {}", png.display(), out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
