//! The config file as a flat list of `dotted.key = value` entries with their positions, from the TOML document
//! (`[web] listen-address = …` and `web.listen-address = …` are the same entry).

use std::ops::Range;

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

/// A value as flags can take it.
#[derive(Debug, PartialEq)]
pub enum Value {
    Scalar(String),
    Bool(bool),
    List(Vec<String>),
    /// A TOML type no flag takes (datetime, nested arrays, tables in arrays); its name.
    Unsupported(&'static str),
}

#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub span: Range<usize>,
    pub value_span: Range<usize>,
    pub value: Value,
}

impl Entry {
    pub fn is_bool(&self) -> bool {
        matches!(self.value, Value::Bool(_))
    }

    /// The arguments this entry stands for: `--key=value` once per value; a `true` switch is `--key`.
    pub fn to_flags(&self) -> Result<Vec<String>, String> {
        let flag = |v: &str| format!("--{}={v}", self.key);
        match &self.value {
            Value::Scalar(s) => Ok(vec![flag(s)]),
            Value::List(items) => Ok(items.iter().map(|v| flag(v)).collect()),
            Value::Bool(true) => Ok(vec![format!("--{}", self.key)]),
            Value::Bool(false) => Ok(Vec::new()),
            Value::Unsupported(kind) => Err(format!("a {kind} is not a valid value here")),
        }
    }
}

/// Parses `text` and lists its leaves in document order. The error is TOML's, with line and column.
pub fn flatten(text: &str) -> Result<Vec<Entry>, String> {
    let table = DeTable::parse(text).map_err(|mut e| {
        e.set_input(Some(text));
        e.to_string().trim_end().to_string()
    })?;
    let mut out = Vec::new();
    walk("", table.get_ref(), &mut out);
    out.sort_by_key(|e| e.span.start);
    Ok(out)
}

fn walk(prefix: &str, table: &DeTable<'_>, out: &mut Vec<Entry>) {
    for (key, value) in table {
        let name = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if let DeValue::Table(inner) = value.get_ref() {
            walk(&name, inner, out);
            continue;
        }
        out.push(Entry { key: name, span: key.span(), value_span: value.span(), value: leaf(value) });
    }
}

fn leaf(value: &Spanned<DeValue<'_>>) -> Value {
    match value.get_ref() {
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Array(items) => {
            let scalars: Option<Vec<String>> = items.iter().map(|v| scalar(v.get_ref())).collect();
            scalars.map_or(Value::Unsupported("nested array or table"), Value::List)
        }
        other => scalar(other).map_or(Value::Unsupported(other.type_str()), Value::Scalar),
    }
}

fn scalar(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        // as_str() is already without `_` and radix prefix, as from_str_radix wants it.
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().to_string()),
        _ => None,
    }
}

/// 1-based line and column of byte `offset`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
