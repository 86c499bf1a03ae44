//! Splits the iterator's byte stream into per-mm groups of [`SubscriberRecord`]s.

use mmuscope_abi::{SubscriberRecord, record_kind};

/// One mm as the program saw it: its MM record and the NOTIFIER/INTERVAL records after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMm {
    pub mm: SubscriberRecord,
    pub notifiers: Vec<SubscriberRecord>,
    /// In address order.
    pub intervals: Vec<SubscriberRecord>,
    /// An ITREE_TRUNCATED record followed them: the tree has more than these.
    pub intervals_truncated: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("iterator output of {0} bytes is not a whole number of {1}-byte records")]
    Length(usize, usize),
    #[error("record {0} of kind {1} does not belong to the mm record before it")]
    Orphan(usize, u32),
}

/// Parses the stream; an mm reached through two tasks (`CLONE_VM` without `CLONE_THREAD`)
/// is kept once, under the first.
pub fn parse(bytes: &[u8]) -> Result<Vec<RawMm>, ParseError> {
    let size = size_of::<SubscriberRecord>();
    if !bytes.len().is_multiple_of(size) {
        return Err(ParseError::Length(bytes.len(), size));
    }
    let mut out: Vec<RawMm> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut skipping = false;
    for (i, chunk) in bytes.chunks_exact(size).enumerate() {
        // SAFETY: `chunk` holds exactly one record's bytes; every bit pattern is a valid record.
        let r: SubscriberRecord = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
        if r.kind == record_kind::MM {
            skipping = !seen.insert(r.mm);
            if !skipping {
                out.push(RawMm { mm: r, notifiers: Vec::new(), intervals: Vec::new(), intervals_truncated: false });
            }
            continue;
        }
        if skipping {
            continue;
        }
        let owner = out.last_mut().filter(|m| m.mm.mm == r.mm).ok_or(ParseError::Orphan(i, r.kind))?;
        match r.kind {
            record_kind::NOTIFIER => owner.notifiers.push(r),
            record_kind::INTERVAL => owner.intervals.push(r),
            record_kind::ITREE_TRUNCATED => owner.intervals_truncated = true,
            _ => return Err(ParseError::Orphan(i, r.kind)),
        }
    }
    Ok(out)
}

/// `comm` up to its NUL.
pub fn comm(bytes: &[u8; 16]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
