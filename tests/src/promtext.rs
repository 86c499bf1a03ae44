//! A small, strict parser for the Prometheus text exposition format (version 0.0.4), enough to check counters.
//!
//! Strict on purpose: the agent's `/metrics` must be well-formed, so anything unexpected is an error with its line
//! number rather than a skipped line. `# HELP`/`# TYPE` are read (types are kept), other comments ignored.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Metric family → declared type (`counter`, `gauge`, …).
    pub types: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("metrics line {line}: {reason}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

impl Exposition {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut out = Self::default();
        for (i, line) in text.lines().enumerate() {
            let err = |reason| ParseError { line: i + 1, reason, text: line.to_owned() };
            let line_t = line.trim();
            if line_t.is_empty() {
                continue;
            }
            if let Some(comment) = line_t.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE") {
                    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                        return Err(err("incomplete # TYPE"));
                    };
                    out.types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            out.samples.push(parse_sample(line_t).map_err(err)?);
        }
        Ok(out)
    }

    /// Samples of one metric name.
    pub fn samples_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Sum of `name` over all label sets, grouped by the value of `label` (missing label → empty string).
    pub fn sum_by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.samples_named(name) {
            let key = s.labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("invalid metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "invalid timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing garbage");
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Parses `a="x",b="y"}` (the part after `{`); returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let key = s[..eq].trim();
        if !is_label_name(key) {
            return Err("invalid label name");
        }
        let quoted = s[eq + 1..].trim_start().strip_prefix('"').ok_or("label value not quoted")?;
        let (value, after) = unescape_label_value(quoted)?;
        if labels.insert(key.to_owned(), value).is_some() {
            return Err("duplicate label");
        }
        s = after.trim_start();
        if let Some(after_comma) = s.strip_prefix(',') {
            s = after_comma;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after label value");
        }
    }
}

/// Reads a label value up to its closing quote, undoing `\\`, `\"` and `\n`.
fn unescape_label_value(s: &str) -> Result<(String, &str), &'static str> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                _ => return Err("invalid escape in label value"),
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value")
}

fn parse_value(s: &str) -> Result<f64, &'static str> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| "invalid value"),
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP mmuscope_invalidations_total Invalidation brackets.
# TYPE mmuscope_invalidations_total counter
mmuscope_invalidations_total{cgroup="/a",event="unknown",blockable="true"} 1000
mmuscope_invalidations_total{blockable="false",cgroup="/a",event="unknown"} 2
mmuscope_invalidations_total{cgroup="/b",event="unknown",blockable="true",} 7 1700000000000
# a free comment
mmuscope_build_info{version="0.1.0"} 1
process_start_time_seconds 1.7e9

"#;

    #[test]
    fn parses_samples_types_and_sums() {
        let e = Exposition::parse(TEXT).unwrap();
        assert_eq!(e.samples.len(), 5);
        assert_eq!(e.types["mmuscope_invalidations_total"], "counter");
        let by = e.sum_by("mmuscope_invalidations_total", "cgroup");
        assert_eq!(by["/a"], 1002.0);
        assert_eq!(by["/b"], 7.0);
        assert_eq!(e.samples[4].value, 1.7e9);
        assert!(e.samples[4].labels.is_empty());
    }

    #[test]
    fn label_escapes_and_special_values() {
        let e = Exposition::parse("m{p=\"a\\\\b\\\"c\\nd\",q=\"}{,=\"} +Inf\nn NaN\no -Inf\n").unwrap();
        assert_eq!(e.samples[0].labels["p"], "a\\b\"c\nd");
        assert_eq!(e.samples[0].labels["q"], "}{,=");
        assert_eq!(e.samples[0].value, f64::INFINITY);
        assert!(e.samples[1].value.is_nan());
        assert_eq!(e.samples[2].value, f64::NEG_INFINITY);
    }

    #[test]
    fn spaces_inside_braces_are_tolerated() {
        let e = Exposition::parse("m{ a = \"1\" , b=\"2\" } 3\n").unwrap();
        assert_eq!(e.samples[0].labels.len(), 2);
        assert_eq!(e.samples[0].value, 3.0);
    }

    #[test]
    fn errors_carry_line_numbers() {
        for (bad, reason) in [
            ("m{a=\"1", "unterminated label value"),
            ("m{a=\"1\"", "expected `,` or `}` after label value"),
            ("m{a=1} 2", "label value not quoted"),
            ("m{a=\"1\" b=\"2\"} 3", "expected `,` or `}` after label value"),
            ("m{a=\"1\",a=\"2\"} 3", "duplicate label"),
            ("m{a=\"\\x\"} 3", "invalid escape in label value"),
            ("m", "no value"),
            ("m{}", "no value"),
            ("m abc", "invalid value"),
            ("m 1 2 3", "trailing garbage"),
            ("m 1 1.5", "invalid timestamp"),
            ("1m 2", "invalid metric name"),
            ("m{1a=\"x\"} 2", "invalid label name"),
            ("# TYPE m", "incomplete # TYPE"),
        ] {
            let err = Exposition::parse(&format!("ok 1\n{bad}\n")).unwrap_err();
            assert_eq!((err.line, err.reason), (2, reason), "{bad:?}");
        }
    }
}
