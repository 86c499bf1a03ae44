//! Drawing one frame: a header (agent, sort, keys, last error) and the cgroup table.

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table},
};

use super::{
    Header,
    state::{Row, State},
};
use crate::client::human_seconds;

pub fn draw(f: &mut Frame, header: &Header, state: &State) {
    let [top, body] = Layout::vertical([Constraint::Length(3), Constraint::Min(1)]).areas(f.area());
    let status = match &header.error {
        Some(e) => format!("error: {e}"),
        None => format!("{} cgroups with activity", state.total),
    };
    let lines = vec![
        Line::from(format!("mmuscope top — {} — {}", header.url, header.agent)),
        Line::from(format!("sort: {} (s: next sort, r: refresh, q: quit)", header.sort.label())),
        Line::from(status),
    ];
    f.render_widget(Paragraph::new(lines), top);

    let head = ["INV/S", "TOTAL", "P99", "DOUBLE", "FORK COPIES", "CGROUP", "NAMESPACE/POD/CONTAINER"]
        .into_iter()
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD)));
    let rows = state.rows.iter().map(row);
    let widths = [
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(11),
        Constraint::Fill(2),
        Constraint::Fill(1),
    ];
    f.render_widget(Table::new(rows, widths).header(TableRow::new(head)), body);
}

fn row(r: &Row) -> TableRow<'static> {
    let dash = || "-".to_string();
    TableRow::new([
        Cell::from(r.rate.map_or_else(dash, |v| format!("{v:.1}"))),
        Cell::from(r.total.to_string()),
        Cell::from(r.p99.map_or_else(dash, human_seconds)),
        Cell::from(r.double.map_or_else(dash, |n| n.to_string())),
        Cell::from(r.fork_copies.map_or_else(dash, |n| n.to_string())),
        Cell::from(r.name.clone()),
        Cell::from(r.workload.clone()),
    ])
}
