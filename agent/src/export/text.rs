//! The text exposition format (0.0.4) of [`Family`] rows, byte for byte as the prometheus crate's `TextEncoder`
//! writes its families after its registry sorted them (families by name, series by label values, empty families
//! left out): the eco tier's promtool checks and exact-count tests read this output, and a unit test compares the
//! two encoders on the same families.
//!
//! Families from the prometheus crate's own collectors (the process collector) come in already encoded, with their
//! names, and are merged in name order.

use std::io::Write;

use super::{
    histogram,
    series::{Family, Kind, Value},
};
use crate::{
    cgroups::CgroupLabels,
    exposition::{escape, pair},
};

/// A family encoded elsewhere: its name and its text.
pub struct Encoded {
    pub name: String,
    pub text: Vec<u8>,
}

/// Writes `families` and `encoded` into `out`, all in name order.
pub fn write(out: &mut Vec<u8>, mut families: Vec<Family<'_>>, encoded: &[Encoded]) {
    families.retain(|f| !f.is_empty());
    families.sort_by_key(|f| f.name);
    let mut encoded = encoded.iter().peekable();
    for family in &mut families {
        while let Some(e) = encoded.next_if(|e| e.name.as_str() < family.name) {
            out.extend_from_slice(&e.text);
        }
        write_family(out, family);
    }
    encoded.for_each(|e| out.extend_from_slice(&e.text));
}

fn write_family(out: &mut Vec<u8>, family: &mut Family<'_>) {
    let name = family.name;
    if !family.help.is_empty() {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        escape(out, family.help, false);
        out.push(b'\n');
    }
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(family.kind.as_str().as_bytes());
    out.push(b'\n');
    let kind = family.kind;
    let pieces = Pieces::of(family);
    for s in family.series() {
        let line = Line { pieces: &pieces, cgroup: s.cgroup.as_ref(), values: &s.own[..pieces.labels.len()] };
        match (&s.value, kind) {
            (Value::Histogram(h), Kind::Histogram) => {
                let bounds = histogram::bound_labels();
                for ((_, count), le) in histogram::cumulative_seconds(h).zip(bounds) {
                    line.write(out, Suffix::Bucket, Some(le), Number::Count(count));
                }
                line.write(out, Suffix::Bucket, Some("+Inf"), Number::Count(h.count));
                line.write(out, Suffix::Sum, None, Number::Float(h.sum_ns as f64 / 1e9));
                line.write(out, Suffix::Count, None, Number::Count(h.count));
            }
            (Value::Count(n), _) => line.write(out, Suffix::None, None, Number::Count(*n)),
            (Value::Float(v), _) => line.write(out, Suffix::None, None, Number::Float(*v)),
            (Value::Histogram(_), _) => debug_assert!(false, "{name}: a histogram value in a {kind:?} family"),
        }
    }
}

/// The constant parts of a family's sample lines, put together once per family: a line is then a few copies
/// rather than one per name, brace and quote (each a `memcpy` call; their number, not their bytes, was what
/// writing cost at 10k cgroups, measured).
struct Pieces {
    /// The sample name with each [`Suffix`], in its order.
    names: [Vec<u8>; 4],
    /// `label="` of each of the family's own labels.
    labels: Vec<Vec<u8>>,
}

impl Pieces {
    fn of(family: &Family<'_>) -> Self {
        let name = |suffix: &str| [family.name, suffix].concat().into_bytes();
        Self {
            names: [name(""), name("_bucket"), name("_sum"), name("_count")],
            labels: family.own.iter().map(|l| format!("{l}=\"").into_bytes()).collect(),
        }
    }
}

#[derive(Clone, Copy)]
enum Suffix {
    None,
    Bucket,
    Sum,
    Count,
}

/// One series' label values with its family's pieces.
struct Line<'l, 'a> {
    pieces: &'l Pieces,
    cgroup: Option<&'l CgroupLabels<'a>>,
    values: &'l [&'a str],
}

/// A sample value: counts are written as the prometheus crate writes `count as f64`.
enum Number {
    Count(u64),
    Float(f64),
}

impl Line<'_, '_> {
    fn write(&self, out: &mut Vec<u8>, suffix: Suffix, le: Option<&str>, value: Number) {
        out.extend_from_slice(&self.pieces.names[suffix as usize]);
        let mut separator = b'{';
        match self.cgroup {
            Some(c) if !c.text.is_empty() => {
                out.push(separator);
                out.extend_from_slice(c.text.as_bytes());
                separator = b',';
            }
            Some(c) => {
                for (n, v) in CgroupLabels::NAMES.iter().zip(c.values()) {
                    pair(out, &mut separator, format!("{n}=\"").as_bytes(), v);
                }
            }
            None => {}
        }
        for (head, v) in self.pieces.labels.iter().zip(self.values) {
            pair(out, &mut separator, head, v);
        }
        if let Some(le) = le {
            pair(out, &mut separator, b"le=\"", le);
        }
        if separator == b',' {
            out.push(b'}');
        }
        out.push(b' ');
        match value {
            // `u64 as f64` prints as the integer itself up to 2^53 (the shortest round-trip form of an
            // integer-valued float has no fraction and no exponent); beyond, the float's digits differ.
            Number::Count(n) if n <= 1 << 53 => decimal(out, n),
            Number::Count(n) => write!(out, "{}", n as f64).expect("writing to a Vec cannot fail"),
            Number::Float(v) => write!(out, "{v}").expect("writing to a Vec cannot fail"),
        }
        out.push(b'\n');
    }
}

/// `n` in decimal, as `Display` writes it, in one copy (the formatting machinery was ~3 % of a collection).
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests;
