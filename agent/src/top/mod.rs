//! `mmuscope top`: a live terminal view (ratatui) of the busiest cgroups — invalidation rate, total, p99 latency,
//! double notifications and pinned fork copies — read from an agent's HTTP API, so it works against a remote agent.
//!
//! Keys: `q`/Esc/Ctrl-C quit, `s` cycles the sort order, `r` refreshes now.

mod state;
mod view;

use std::time::Instant;

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use serde_json::Value;

use crate::client::{Client, TopArgs};
use state::{ApiList, Sort, State};

/// What the header shows.
pub struct Header {
    pub url: String,
    pub agent: String,
    pub error: Option<String>,
    pub sort: Sort,
}

pub fn run(args: &TopArgs) -> Result<i32> {
    let client = Client::new(&args.client)?;
    let mut terminal = ratatui::try_init().context("mmuscope top needs a terminal")?;
    let result = run_loop(&mut terminal, &client, args);
    ratatui::restore();
    result.map(|()| 0)
}

fn run_loop(terminal: &mut ratatui::DefaultTerminal, client: &Client, args: &TopArgs) -> Result<()> {
    let mut state = State::default();
    let mut header = Header { url: client.base().to_string(), agent: String::new(), error: None, sort: Sort::Rate };
    loop {
        match poll(client, args.limit) {
            Ok((status, list)) => {
                header.agent = describe(&status);
                header.error = None;
                state.update(list, Instant::now());
            }
            Err(e) => header.error = Some(format!("{e:#}")),
        }
        state.sort(header.sort);
        terminal.draw(|f| view::draw(f, &header, &state))?;
        let deadline = Instant::now() + args.interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !event::poll(left)? {
                break;
            }
            if let Event::Key(k) = event::read()? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    KeyCode::Char('s') => {
                        header.sort = header.sort.next();
                        state.sort(header.sort);
                        terminal.draw(|f| view::draw(f, &header, &state))?;
                    }
                    KeyCode::Char('r') => break,
                    _ => {}
                }
            }
        }
    }
}

fn poll(client: &Client, limit: u64) -> Result<(Value, ApiList)> {
    let status: Value = client.get("/api/v1/status")?;
    let list: ApiList = client.get(&format!("/api/v1/cgroups?sort=invalidations&limit={limit}"))?;
    Ok((status, list))
}

fn describe(status: &Value) -> String {
    let s = |k: &str| status[k].as_str().unwrap_or("?").to_string();
    let modes: Vec<String> = status["families"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| format!("{}={}", f["name"].as_str().unwrap_or("?"), f["attached"].as_str().unwrap_or("none")))
        .collect();
    format!("agent {} · kernel {} · {}", s("version"), s("kernel_release"), modes.join(" "))
}
