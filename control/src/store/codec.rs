//! Binary encoding of stored records and history events for the embedded backend.
//!
//! Layouts (little-endian): record = create u64, mod u64, value bytes;
//! event = kind u8, revision u64, key (u32 len + bytes), new record (u32 len + bytes), prev flag u8 [+ prev record].

use super::{Error, Event, EventKind, KeyValue, Result};

/// Encodes a key's value together with its revisions.
pub fn encode_record(create_revision: u64, mod_revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a record written by [`encode_record`].
pub fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    let mut r = Reader { bytes, pos: 0 };
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: r.rest().to_vec(),
        create_revision,
        mod_revision,
    })
}

/// Encodes a history event.
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(match event.kind {
        EventKind::Created => 0,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    });
    out.extend_from_slice(&event.revision.to_le_bytes());
    put_bytes(&mut out, event.kv.key.as_bytes());
    put_bytes(
        &mut out,
        &encode_record(event.kv.create_revision, event.kv.mod_revision, &event.kv.value),
    );
    match &event.prev {
        None => out.push(0),
        Some(prev) => {
            out.push(1);
            put_bytes(
                &mut out,
                &encode_record(prev.create_revision, prev.mod_revision, &prev.value),
            );
        }
    }
    out
}

/// Decodes a history event written by [`encode_event`].
pub fn decode_event(bytes: &[u8]) -> Result<Event> {
    let mut r = Reader { bytes, pos: 0 };
    let kind = match r.u8()? {
        0 => EventKind::Created,
        1 => EventKind::Updated,
        2 => EventKind::Deleted,
        other => return Err(corrupt(format!("unknown event kind {other}"))),
    };
    let revision = r.u64()?;
    let key = String::from_utf8(r.len_prefixed()?.to_vec()).map_err(|e| corrupt(e.to_string()))?;
    let kv = decode_record(&key, r.len_prefixed()?)?;
    let prev = match r.u8()? {
        0 => None,
        _ => Some(decode_record(&key, r.len_prefixed()?)?),
    };
    Ok(Event {
        kind,
        revision,
        kv,
        prev,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("stored values are limited far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn corrupt(what: String) -> Error {
    Error::Backend(format!("corrupt stored data: {what}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| corrupt(format!("truncated at byte {}", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("took 8 bytes")))
    }

    fn len_prefixed(&mut self) -> Result<&'a [u8]> {
        let b = self.take(4)?;
        let len = u32::from_le_bytes(b.try_into().expect("took 4 bytes"));
        self.take(len as usize)
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, c: u64, m: u64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: c,
            mod_revision: m,
        }
    }

    #[test]
    fn record_round_trips() {
        let bytes = encode_record(3, 9, b"{\"a\":1}");
        assert_eq!(decode_record("/k", &bytes).unwrap(), kv("/k", "{\"a\":1}", 3, 9));
    }

    #[test]
    fn events_round_trip_with_and_without_prev() {
        let created = Event {
            kind: EventKind::Created,
            revision: 4,
            kv: kv("/a/b", "x", 4, 4),
            prev: None,
        };
        assert_eq!(decode_event(&encode_event(&created)).unwrap(), created);
        let deleted = Event {
            kind: EventKind::Deleted,
            revision: 7,
            kv: kv("/a/b", "y", 4, 7),
            prev: Some(kv("/a/b", "y", 4, 6)),
        };
        assert_eq!(decode_event(&encode_event(&deleted)).unwrap(), deleted);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let bytes = encode_event(&Event {
            kind: EventKind::Updated,
            revision: 2,
            kv: kv("/k", "v", 1, 2),
            prev: None,
        });
        for cut in 0..bytes.len() {
            assert!(decode_event(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
        assert!(decode_record("/k", &[1, 2, 3]).is_err());
    }
}
