//! The grafana/dashboard-linter checklist as a test: the rules it has for Prometheus dashboards (named as there),
//! plus a few of ours (noted). Whether each expression parses and returns data is checked against a real
//! Prometheus in `live`; this checks what a reader of the JSON can see.

use std::collections::HashSet;

use serde_json::Value;

/// Units the dashboards may use: Grafana unit ids, so the panel shows "ops/s", "µs", "MiB/s" and not bare floats.
const UNITS: &[&str] = &["none", "short", "ops", "s", "ms", "Bps", "bytes", "percentunit"];
/// The variables every dashboard has; `node`, `namespace`, `pod` and `cgroup` are ours (the linter knows `job` and
/// `instance`).
const VARIABLES: &[&str] = &["job", "node", "instance", "namespace", "pod", "cgroup"];
const DATASOURCE: &str = "${datasource}";

pub struct Report {
    pub panels: usize,
    pub queries: usize,
    pub problems: Vec<String>,
}

pub fn lint(dash: &Value) -> Report {
    let mut r = Report { panels: 0, queries: 0, problems: Vec::new() };
    let mut bad = |rule: &str, what: String| r.problems.push(format!("{rule}: {what}"));
    for key in ["uid", "title", "description"] {
        if dash[key].as_str().is_none_or(str::is_empty) {
            bad("dashboard (ours)", format!("no {key}"));
        }
    }
    if dash["editable"] != false {
        bad("dashboard (ours)", "provisioned dashboards are not editable (editable: false)".into());
    }
    variables(dash, &mut bad);
    let panels: Vec<&Value> = dash["panels"].as_array().map(|p| p.iter().collect()).unwrap_or_default();
    layout(&panels, &mut bad);
    for p in panels.iter().filter(|p| p["type"] != "row") {
        r.panels += 1;
        r.queries += p["targets"].as_array().map_or(0, Vec::len);
        panel(p, &mut bad);
    }
    r
}

fn variables(dash: &Value, bad: &mut impl FnMut(&str, String)) {
    let vars = dash["templating"]["list"].as_array().cloned().unwrap_or_default();
    let find = |name: &str| vars.iter().find(|v| v["name"] == name);
    match find("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => bad("template-datasource-rule", "no `datasource` variable of type datasource for prometheus".into()),
    }
    for name in VARIABLES {
        let Some(v) = find(name) else {
            bad("template-job-rule / template-instance-rule", format!("no `{name}` variable"));
            continue;
        };
        if v["type"] != "query" || v["datasource"]["uid"] != DATASOURCE {
            bad("template-job-rule / template-instance-rule", format!("`{name}` is not a query on {DATASOURCE}"));
        }
        if v["multi"] != true || v["includeAll"] != true {
            bad("template-job-rule / template-instance-rule", format!("`{name}` must allow several values and All"));
        }
        if v["refresh"] != 2 {
            bad("template-on-time-change-reload-rule", format!("`{name}` must refresh on time range change (2)"));
        }
        let query = v["query"]["query"].as_str().unwrap_or_default();
        if !(query.starts_with("label_values(") && query.ends_with(&format!(", {name})"))) {
            bad("template-label-promql-rule", format!("`{name}`: {query:?} is not label_values(<selector>, {name})"));
        }
    }
}

/// Ours: unique ids, inside the 24-column grid, no overlapping panels.
fn layout(panels: &[&Value], bad: &mut impl FnMut(&str, String)) {
    let mut ids = HashSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, &str)> = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64()) {
            bad("layout (ours)", format!("panel id {} used twice", p["id"]));
        }
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap_or(0));
        if w == 0 || h == 0 || x + w > 24 {
            bad("layout (ours)", format!("{title:?} is outside the grid ({g})"));
        }
        for (bx, by, bw, bh, other) in &boxes {
            if x < bx + bw && *bx < x + w && y < by + bh && *by < y + h {
                bad("layout (ours)", format!("{title:?} overlaps {other:?}"));
            }
        }
        boxes.push((x, y, w, h, title));
    }
}

fn panel(p: &Value, bad: &mut impl FnMut(&str, String)) {
    let title = p["title"].as_str().unwrap_or_default();
    let at = |what: &str| format!("panel {title:?}: {what}");
    if title.is_empty() || p["description"].as_str().is_none_or(str::is_empty) {
        bad("panel-title-description-rule", at("needs a title and a description"));
    }
    if p["datasource"]["uid"] != DATASOURCE {
        bad("panel-datasource-rule", at("datasource must be ${datasource}"));
    }
    let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
    if !UNITS.contains(&unit) {
        bad("panel-units-rule", at(&format!("unit {unit:?} is not one of {UNITS:?}")));
    }
    let targets = p["targets"].as_array().cloned().unwrap_or_default();
    if targets.is_empty() {
        bad("panel-no-targets-rule", at("no queries"));
    }
    let instant = matches!(p["type"].as_str(), Some("stat" | "table" | "bargauge"));
    for t in &targets {
        if t["datasource"]["uid"] != DATASOURCE {
            bad("panel-datasource-rule", at("query datasource must be ${datasource}"));
        }
        if t["instant"].as_bool().unwrap_or(false) != instant {
            bad("target-instant (ours)", at("stat, table and bar gauge queries are instant, graphs are ranges"));
        }
        if p["type"] == "heatmap" && (t["format"] != "heatmap" || t["legendFormat"] != "{{le}}") {
            bad("heatmap (ours)", at("heatmap queries need format heatmap and legend {{le}}"));
        }
        for problem in expr_problems(t["expr"].as_str().unwrap_or_default()) {
            bad(problem.0, at(&problem.1));
        }
    }
}

/// The expression rules: `$__rate_interval` ranges, `job`/`instance` matchers in every selector, no bare metric
/// names, counters only inside rate()/increase().
pub fn expr_problems(expr: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if expr.trim().is_empty() {
        out.push(("target-promql-rule", "empty query".to_string()));
        return out;
    }
    let tokens = tokens(expr);
    for (i, tok) in tokens.iter().enumerate() {
        match tok {
            Token::Range(r) if r != "$__rate_interval" => {
                out.push(("target-rate-interval-rule", format!("range [{r}] instead of [$__rate_interval]")))
            }
            Token::Selector(m) => {
                for want in ["job=~\"$job\"", "instance=~\"$instance\""] {
                    if !m.split(',').any(|x| x.trim() == want) {
                        let rule = if want.starts_with("job") { "target-job-rule" } else { "target-instance-rule" };
                        out.push((rule, format!("selector {{{m}}} lacks {want}")));
                    }
                }
            }
            Token::Metric(name, has_selector) => {
                if !has_selector {
                    out.push(("target-job-rule", format!("metric {name} has no selector")));
                }
                let counter = ["_total", "_bucket", "_count", "_sum"].iter().any(|s| name.ends_with(s));
                let wrapped =
                    i > 0 && matches!(&tokens[i - 1], Token::Call(f) if RANGE_FUNCTIONS.contains(&f.as_str()));
                if counter && !wrapped {
                    out.push(("target-counter-agg-rule", format!("counter {name} outside rate()/increase()")));
                }
            }
            _ => {}
        }
    }
    out
}

const RANGE_FUNCTIONS: &[&str] = &["rate", "irate", "increase"];
const KEYWORDS: &[&str] =
    &["by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"];
const AGGREGATIONS: &[&str] =
    &["sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "group", "count_values"];

#[derive(Debug, PartialEq)]
enum Token {
    /// A function or aggregation name (followed by `(`).
    Call(String),
    /// A metric name, and whether a `{…}` selector follows.
    Metric(String, bool),
    /// The text between `{` and `}`.
    Selector(String),
    /// The text between `[` and `]`.
    Range(String),
}

/// Just enough of PromQL's lexer for the rules above: strings, label lists after by/on/…, selectors, ranges.
fn tokens(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let until = |from: usize, end: char| chars[from..].iter().position(|&c| c == end).map_or(chars.len(), |n| from + n);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = until(i + 1, '"') + 1;
        } else if c == '{' {
            let end = until(i, '}');
            out.push(Token::Selector(chars[i + 1..end].iter().collect()));
            i = end + 1;
        } else if c == '[' {
            let end = until(i, ']');
            out.push(Token::Range(chars[i + 1..end].iter().collect()));
            i = end + 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            if KEYWORDS.contains(&word.as_str()) {
                // A label list follows by/without/on/ignoring/group_*: skip it.
                if next == Some('(') {
                    i = until(i, ')') + 1;
                }
            } else if next == Some('(') || AGGREGATIONS.contains(&word.as_str()) {
                // `sum by (x) (…)`: an aggregation's clause may come before its parenthesis.
                out.push(Token::Call(word));
            } else {
                out.push(Token::Metric(word, next == Some('{')));
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers, including exponents like 1e-9 (the `e` must not start a metric name).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '-') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const M: &str = r#"job=~"$job", instance=~"$instance""#;

    #[test]
    fn the_shipped_dashboards_are_clean() {
        for text in [
            include_str!("../../../../dashboards/mmuscope-fleet.json"),
            include_str!("../../../../dashboards/mmuscope-host.json"),
            include_str!("../../../../dashboards/mmuscope-agent.json"),
        ] {
            let dash: Value = serde_json::from_str(text).unwrap();
            let report = lint(&dash);
            assert!(report.problems.is_empty(), "{}: {:#?}", dash["title"], report.problems);
            assert!(report.queries >= report.panels && report.panels > 5);
        }
    }

    #[test]
    fn expression_rules() {
        let good =
            format!("sum by (instance, le) (rate(mmuscope_x_bucket{{{M}, cgroup=~\"$cgroup\"}}[$__rate_interval]))");
        assert!(expr_problems(&good).is_empty(), "{:?}", expr_problems(&good));
        let rules = |e: &str| expr_problems(e).into_iter().map(|(r, _)| r).collect::<Vec<_>>();
        assert_eq!(rules(&format!("rate(mmuscope_x_total{{{M}}}[5m])")), ["target-rate-interval-rule"]);
        assert_eq!(rules(r#"max(mmuscope_y{job=~"$job"})"#), ["target-instance-rule"]);
        assert_eq!(rules("mmuscope_y"), ["target-job-rule"]);
        assert_eq!(rules(&format!("sum(mmuscope_x_total{{{M}}})")), ["target-counter-agg-rule"]);
        // Label names after by/on, strings and numbers are not metrics.
        let e = format!("count(max by (instance, probe) (mmuscope_probe_attached{{{M}}}) == 0) or vector(1e-9)");
        assert!(expr_problems(&e).is_empty(), "{:?}", expr_problems(&e));
    }

    #[test]
    fn panel_and_variable_rules() {
        let ds = json!({"type": "prometheus", "uid": "${datasource}"});
        let var = |name: &str| {
            json!({"name": name, "type": "query", "datasource": ds, "multi": true,
            "includeAll": true, "refresh": 2, "query": {"query": format!("label_values(up, {name})")}})
        };
        let mut dash = json!({
            "uid": "u", "title": "t", "description": "d", "editable": false,
            "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"},
                                    var("job"), var("node"), var("instance"), var("namespace"), var("pod"),
                                    var("cgroup")]},
            "panels": [{"type": "timeseries", "id": 1, "title": "x", "description": "y", "datasource": ds,
                        "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8}, "fieldConfig": {"defaults": {"unit": "ops"}},
                        "targets": [{"datasource": ds, "expr": format!("up{{{M}}}")}]}]
        });
        let report = lint(&dash);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.panels, report.queries), (1, 1));

        dash["panels"][0]["fieldConfig"]["defaults"]["unit"] = json!("");
        dash["panels"][0]["description"] = json!("");
        dash["templating"]["list"][1]["refresh"] = json!(1);
        dash["panels"][0]["gridPos"]["x"] = json!(20);
        let problems = lint(&dash).problems.join("\n");
        for rule in ["panel-units-rule", "panel-title-description-rule", "template-on-time-change", "layout"] {
            assert!(problems.contains(rule), "{rule} missing in:\n{problems}");
        }
    }
}
