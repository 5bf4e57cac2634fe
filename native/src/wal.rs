//! The write-ahead log's checksum: CRC-32C (Castagnoli), with the CPU's CRC
//! instructions where it has them (SSE 4.2 on x86-64, the CRC extension on arm64).
//!
//! A record's checksum covers its body: the body header, then each frame as its
//! length (u32, little-endian) followed by its bytes (pipelines/wal/format.py).

/// The CRC-32C of `data`, continuing from `crc` (0 to start).
pub fn crc32c(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The checksum of one record body: `head`, then every frame with its length prefix.
///
/// Fails when a frame is 4 GiB or more (its length does not fit the u32 prefix).
pub fn record_crc<'a>(
    head: &[u8],
    frames: impl IntoIterator<Item = &'a [u8]>,
) -> Result<u32, usize> {
    let mut crc = crc32c(0, head);
    for frame in frames {
        let length = u32::try_from(frame.len()).map_err(|_| frame.len())?;
        crc = crc32c(crc, &length.to_le_bytes());
        crc = crc32c(crc, frame);
    }
    Ok(crc)
}

/// A record's header: body length (u32), CRC-32C of the body (u32).
const RECORD_HEADER: usize = 8;
/// The smallest body: position (u64), receive time (i64), frame count (u16).
const BODY_HEADER: usize = 18;

/// The size of the whole record (header and body) that holds `frames`, or None when a frame's
/// length does not fit its u32 prefix or there are more frames than the u16 count holds.
pub fn record_size(frames: &[&[u8]]) -> Option<usize> {
    if frames.len() > usize::from(u16::MAX) {
        return None;
    }
    let mut size = RECORD_HEADER + BODY_HEADER;
    for frame in frames {
        u32::try_from(frame.len()).ok()?;
        size = size.checked_add(4 + frame.len())?;
    }
    u32::try_from(size - RECORD_HEADER).ok()?;
    Some(size)
}

/// Write one whole record holding `frames` into `out`, which is exactly `record_size(frames)`
/// bytes; returns its checksum. The layout is pipelines/wal/format.py's: body length and CRC-32C,
/// then the body (position, receive time, frame count, each frame as u32 length + bytes).
pub fn write_record(out: &mut [u8], position: u64, received_ns: i64, frames: &[&[u8]]) -> u32 {
    let (header, body) = out.split_at_mut(RECORD_HEADER);
    body[..8].copy_from_slice(&position.to_le_bytes());
    body[8..16].copy_from_slice(&received_ns.to_le_bytes());
    // record_size bounds both casts below: at most u16::MAX frames, a body under 4 GiB
    body[16..18].copy_from_slice(&(frames.len() as u16).to_le_bytes());
    let mut at = BODY_HEADER;
    for frame in frames {
        body[at..at + 4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        at += 4;
        body[at..at + frame.len()].copy_from_slice(frame);
        at += frame.len();
    }
    let crc = crc32c(0, body);
    header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc.to_le_bytes());
    crc
}
/// A record larger than this is damage, not data (`MAX_BODY_BYTES` in pipelines/wal/format.py).
const MAX_BODY: usize = 1 << 30;

/// The smallest record: a header and an empty body with no frames.
const MIN_RECORD: usize = RECORD_HEADER + BODY_HEADER;

/// The offset of the first intact record at or after `start` whose position lies in
/// `first..bound`: where reading resumes after a damaged record that begins at offset 0 and
/// had position `first`.
///
/// Record boundaries after damage are unknown, so every offset is tried; the length and
/// position checks turn almost every one down before a checksum is computed. Positions follow
/// one another within a segment, so a record `n` positions after `first` lies at least
/// `n * MIN_RECORD` bytes in. Checksums and frame walks are charged to `budget` (bytes): bytes
/// crafted to look like records (a payload holding fake headers) end the search, at a cost
/// bounded by the budget, rather than taking time quadratic in the data.
pub fn find_record(
    data: &[u8],
    start: usize,
    first: u64,
    bound: u64,
    budget: usize,
) -> Option<usize> {
    let last = data.len().checked_sub(MIN_RECORD)?;
    let mut search = Search {
        data,
        first,
        bound,
        budget,
    };
    for offset in start..=last {
        match search.record_at(offset) {
            Candidate::Record => return Some(offset),
            Candidate::Not => {}
            Candidate::OutOfBudget => return None,
        }
    }
    None
}

enum Candidate {
    Record,
    Not,
    OutOfBudget,
}

struct Search<'a> {
    data: &'a [u8],
    first: u64,
    bound: u64,
    budget: usize,
}

impl Search<'_> {
    fn record_at(&mut self, offset: usize) -> Candidate {
        let data = self.data;
        let (Some(length), Some(crc)) = (read_u32(data, offset), read_u32(data, offset + 4)) else {
            return Candidate::Not;
        };
        let length = length as usize;
        let body_start = offset + RECORD_HEADER;
        if !(BODY_HEADER..=MAX_BODY).contains(&length) || body_start + length > data.len() {
            return Candidate::Not;
        }
        let Some(position) = read_u64(data, body_start) else {
            return Candidate::Not;
        };
        let reachable = self.first.saturating_add((offset / MIN_RECORD) as u64);
        if position < self.first || position >= self.bound || position > reachable {
            return Candidate::Not;
        }
        let Some(left) = self.budget.checked_sub(length) else {
            return Candidate::OutOfBudget;
        };
        self.budget = left;
        let body = &data[body_start..body_start + length];
        if crc32c(0, body) != crc {
            return Candidate::Not;
        }
        match frames_fill(body, &mut self.budget) {
            Some(true) => Candidate::Record,
            Some(false) => Candidate::Not,
            None => Candidate::OutOfBudget,
        }
    }
}

/// Whether the body's frames (count, then length-prefixed frames) end exactly at its end;
/// None when walking them would exceed the budget (4 bytes per frame).
fn frames_fill(body: &[u8], budget: &mut usize) -> Option<bool> {
    let count = usize::from(u16::from_le_bytes([body[16], body[17]]));
    *budget = budget.checked_sub(count * 4)?;
    let mut offset = BODY_HEADER;
    for _ in 0..count {
        let Some(length) = read_u32(body, offset) else {
            return Some(false);
        };
        offset += 4 + length as usize;
        if offset > body.len() {
            return Some(false);
        }
    }
    Some(offset == body.len())
}

fn read_u64(data: &[u8], offset: usize) -> Option<u64> {
    data.get(offset..offset + 8)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
}

fn read_u32(data: &[u8], offset: usize) -> Option<u32> {
    data.get(offset..offset + 4)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(position: u64, payload: &[u8]) -> Vec<u8> {
        let mut head = position.to_le_bytes().to_vec();
        head.extend_from_slice(&7i64.to_le_bytes());
        head.extend_from_slice(&1u16.to_le_bytes());
        let crc = record_crc(&head, [payload]).unwrap();
        let mut body = head;
        body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        body.extend_from_slice(payload);
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    const BUDGET: usize = 1 << 20;

    #[test]
    fn find_record_steps_over_damage_to_the_next_intact_record() {
        let (a, b, c) = (record(5, b"aaaa"), record(6, b"bbbb"), record(7, b"cccc"));
        let mut data = [a.clone(), b.clone(), c].concat();
        data[a.len() + 12] ^= 0x40; // a bit flip in b's body
        assert_eq!(find_record(&data, 0, 5, u64::MAX, BUDGET), Some(0));
        assert_eq!(
            find_record(&data, 1, 5, u64::MAX, BUDGET),
            Some(a.len() + b.len())
        );
    }

    #[test]
    fn find_record_keeps_to_the_positions_asked_for() {
        let data = [record(5, b"x"), record(6, b"y")].concat();
        let second = record(5, b"x").len();
        assert_eq!(find_record(&data, 0, 6, u64::MAX, BUDGET), Some(second));
        assert_eq!(find_record(&data, 0, 7, u64::MAX, BUDGET), None);
        assert_eq!(find_record(&data, 0, 5, 5, BUDGET), None);
    }

    #[test]
    fn find_record_turns_down_a_position_too_far_for_its_offset() {
        // position 9 cannot lie one record after position 5: positions follow one another
        let data = [record(5, b"x"), record(9, b"y")].concat();
        assert_eq!(find_record(&data, 1, 5, u64::MAX, BUDGET), None);
        let far = [vec![0u8; 4 * MIN_RECORD], record(9, b"y")].concat();
        assert_eq!(
            find_record(&far, 1, 5, u64::MAX, BUDGET),
            Some(4 * MIN_RECORD)
        );
    }

    #[test]
    fn find_record_gives_up_when_its_budget_is_spent() {
        let data = [vec![0u8; 100], record(5, &[7u8; 1_000])].concat();
        assert_eq!(find_record(&data, 1, 5, u64::MAX, 2_000), Some(100));
        assert_eq!(find_record(&data, 1, 5, u64::MAX, 500), None);
    }

    #[test]
    fn find_record_turns_down_frames_that_do_not_fill_the_body() {
        let mut good = record(5, b"abc");
        // claim 2 frames: the checksum must still hold, so recompute it over the changed body
        good[8 + 16] = 2;
        let crc = crc32c(0, &good[8..]);
        good[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(find_record(&good, 0, 5, u64::MAX, BUDGET), None);
    }

    #[test]
    fn find_record_finds_nothing_in_noise_or_short_input() {
        let noise: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(find_record(&noise, 0, 0, u64::MAX, BUDGET), None);
        assert_eq!(find_record(&[0u8; 10], 0, 0, u64::MAX, BUDGET), None);
        assert_eq!(find_record(&[0u8; 10_000], 0, 0, u64::MAX, BUDGET), None);
        let whole = record(3, b"z");
        assert_eq!(
            find_record(&whole[..whole.len() - 1], 0, 0, u64::MAX, BUDGET),
            None
        );
    }

    #[test]
    fn write_record_lays_a_record_out_as_record_crc_checks_it() {
        let frames: [&[u8]; 3] = [b"tyk.analytics", b"envelope", b""];
        let size = record_size(&frames).unwrap();
        let mut out = vec![0u8; size];
        let crc = write_record(&mut out, 5, 7, &frames);
        let mut head = 5u64.to_le_bytes().to_vec();
        head.extend_from_slice(&7i64.to_le_bytes());
        head.extend_from_slice(&3u16.to_le_bytes());
        assert_eq!(record_crc(&head, frames), Ok(crc));
        assert_eq!(read_u32(&out, 0), Some((size - RECORD_HEADER) as u32));
        assert_eq!(read_u32(&out, 4), Some(crc));
        assert_eq!(find_record(&out, 0, 5, u64::MAX, BUDGET), Some(0));
    }

    #[test]
    fn record_size_refuses_what_the_layout_cannot_hold() {
        let empty: &[u8] = b"";
        assert_eq!(record_size(&[]), Some(MIN_RECORD));
        assert_eq!(
            record_size(&vec![empty; 65_535]),
            Some(MIN_RECORD + 4 * 65_535)
        );
        assert_eq!(record_size(&vec![empty; 65_536]), None);
    }

    #[test]
    fn known_answer() {
        // RFC 3720, B.4: 32 bytes of zeros, and the ASCII digits.
        assert_eq!(crc32c(0, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn continues_across_pieces() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b) = data.split_at(3_333);
        assert_eq!(crc32c(crc32c(0, a), b), crc32c(0, &data));
    }

    #[test]
    fn record_crc_is_the_crc_of_the_body() {
        let head = [1u8, 2, 3];
        let frames: [&[u8]; 2] = [b"topic", b""];
        let mut body = head.to_vec();
        for frame in frames {
            body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            body.extend_from_slice(frame);
        }
        assert_eq!(record_crc(&head, frames), Ok(crc32c(0, &body)));
    }
}
