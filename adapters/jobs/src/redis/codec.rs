//! How a job is stored in Redis.

use std::io::Write as _;

use bytes::Bytes;

use crate::job::Job;

use super::source::RedisSource;

/// How a job is stored: this prefix, `{attempt}:{id length}:{id}`, then the payload bytes.
const FORMAT: &[u8] = b"lhj1:";

/// A job as stored in Redis.
pub(super) fn encode(job: &Job) -> Vec<u8> {
    let id = job.id().as_bytes();
    let mut out = Vec::with_capacity(FORMAT.len() + 24 + id.len() + job.payload().len());
    out.extend_from_slice(FORMAT);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}:{}:", job.attempt(), id.len());
    out.extend_from_slice(id);
    out.extend_from_slice(job.payload());
    out
}

/// A stored job, or `None` if `raw` is not in this format.
pub(super) fn decode(raw: &Bytes) -> Option<Job> {
    let rest = raw.strip_prefix(FORMAT)?;
    let (attempt, rest) = split_number(rest)?;
    let (len, rest) = split_number(rest)?;
    let len = usize::try_from(len).ok()?;
    let id = std::str::from_utf8(rest.get(..len)?).ok()?;
    let payload_at = raw.len() - rest.len() + len;
    Some(Job::new(id, raw.slice(payload_at..)).with_attempt(u32::try_from(attempt).ok()?))
}

/// Splits `123:rest` into `(123, rest)`.
fn split_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let colon = bytes.iter().position(|b| *b == b':')?;
    let digits = std::str::from_utf8(&bytes[..colon]).ok()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &bytes[colon + 1..]))
}

impl RedisSource {
    pub(super) fn decode_lossy(&self, raw: Vec<u8>) -> Job {
        let raw = Bytes::from(raw);
        match decode(&raw) {
            Some(job) => job.with_queue(self.inner.queue.clone()).with_receipt(raw),
            None => Job::new(format!("<undecodable, {} bytes>", raw.len()), raw.clone())
                .with_queue(self.inner.queue.clone())
                .with_receipt(raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_binary_payloads_and_odd_ids() {
        let job = Job::new(
            "id:with:colons ✓",
            Bytes::from_static(b"\x00\xffpayload:1:2"),
        )
        .with_attempt(7);
        let raw = Bytes::from(encode(&job));
        assert!(raw.starts_with(b"lhj1:7:"));
        let back = decode(&raw).expect("decodes");
        assert_eq!(back.id(), job.id());
        assert_eq!(back.attempt(), 7);
        assert_eq!(back.payload(), job.payload());
    }

    #[test]
    fn foreign_values_do_not_decode() {
        for raw in [
            &b""[..],
            b"hello",
            b"lhj1:",
            b"lhj1:x:1:a",
            b"lhj1:1:9:short",
            b"lhj1:-1:1:a",
            b"lhj1:1:1",
        ] {
            assert!(decode(&Bytes::copy_from_slice(raw)).is_none(), "{raw:?}");
        }
    }
}
