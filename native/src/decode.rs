//! Decoding `tyk.analytics` msgpack payloads straight into columns.
//!
//! The contract is conservative on purpose: `decode_analytics` returns columns
//! only for a payload it understands completely, whose every record the
//! Python decoder (pipelines/firehose/codec.py + timestamps.py) would accept
//! with the same values; for anything else (a bad record, a duplicate key,
//! an unusual timestamp string, trailing bytes, ...) it returns `None`, and
//! the caller decodes the payload the reference way, with its rejection
//! reasons. So the fast path can never differ from the reference: it either
//! agrees with it or declines.

/// A record timestamp that is no valid instant (timestamps.py's INVALID_NS).
pub const INVALID_NS: i64 = i64::MIN;
const MAX_ID_CHARS: usize = 1_024;
const MAX_DEPTH: usize = 32;
const RESERVE_RECORDS: usize = 4_096;

/// The ids' hash maps: foldhash is several times faster than the standard SipHash on short
/// strings, and its per-process random seed keeps ids a sender chooses from being made to collide.
pub type IdMap<K> = std::collections::HashMap<K, u32, foldhash::fast::RandomState>;

/// A string column, dictionary-encoded: a firehose repeats few distinct org and API ids,
/// so each distinct one is built (and handed to Python) once per payload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dictionary<'a> {
    pub values: Vec<&'a str>,
    pub codes: Vec<u32>,
    index: IdMap<&'a str>,
}

impl<'a> Dictionary<'a> {
    fn with_capacity(records: usize) -> Self {
        Self {
            values: Vec::new(),
            codes: Vec::with_capacity(records),
            index: IdMap::default(),
        }
    }

    fn push(&mut self, text: &'a str) {
        let next = self.values.len() as u32;
        let code = *self.index.entry(text).or_insert(next);
        if code == next {
            self.values.push(text);
        }
        self.codes.push(code);
    }

    /// The column as plain strings (tests).
    pub fn expand(&self) -> Vec<&'a str> {
        self.codes
            .iter()
            .map(|c| self.values[*c as usize])
            .collect()
    }
}

/// One payload's analytics records as columns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AnalyticsColumns<'a> {
    pub timestamp_ns: Vec<i64>,
    pub org_id: Dictionary<'a>,
    pub api_id: Dictionary<'a>,
    pub response_code: Vec<i64>,
    pub latency_ms: Vec<i64>,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

enum Int {
    Signed(i64),
    Unsigned(u64),
}

impl Int {
    fn to_i64(&self) -> Option<i64> {
        match *self {
            Int::Signed(v) => Some(v),
            Int::Unsigned(v) => i64::try_from(v).ok(),
        }
    }
}

/// What a timestamp value is, as far as the fast path goes.
enum Stamp {
    Ns(i64),
    Invalid,
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.data.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    #[inline]
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    #[inline]
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.data.get(self.at).copied()
    }

    #[inline]
    fn array_len(&mut self) -> Option<usize> {
        let first = self.byte()?;
        let len = match first {
            0x90..=0x9f => u64::from(first & 0x0f),
            0xdc => self.be(2)?,
            0xdd => self.be(4)?,
            _ => return None,
        };
        usize::try_from(len).ok()
    }

    #[inline]
    fn map_len(&mut self) -> Option<usize> {
        let first = self.byte()?;
        let len = match first {
            0x80..=0x8f => u64::from(first & 0x0f),
            0xde => self.be(2)?,
            0xdf => self.be(4)?,
            _ => return None,
        };
        usize::try_from(len).ok()
    }

    /// A str value (valid UTF-8), or None for anything else.
    #[inline]
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.raw_str()?).ok()
    }

    /// The bytes of a str value, not yet checked to be UTF-8.
    #[inline]
    fn raw_str(&mut self) -> Option<&'a [u8]> {
        let first = self.byte()?;
        let len = match first {
            0xa0..=0xbf => u64::from(first & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(len).ok()?)
    }

    /// A str value that is valid UTF-8, or None.
    #[inline]
    fn checked_str(&mut self) -> Option<()> {
        utf8(self.raw_str()?)
    }

    /// An int value (never bool or float), or None.
    #[inline]
    fn int(&mut self) -> Option<Int> {
        let first = self.byte()?;
        Some(match first {
            0x00..=0x7f => Int::Signed(i64::from(first)),
            0xe0..=0xff => Int::Signed(i64::from(first as i8)),
            0xcc => Int::Unsigned(self.be(1)?),
            0xcd => Int::Unsigned(self.be(2)?),
            0xce => Int::Unsigned(self.be(4)?),
            0xcf => Int::Unsigned(self.be(8)?),
            0xd0 => Int::Signed(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Int::Signed(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Int::Signed(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Int::Signed(self.be(8)? as i64),
            _ => return None,
        })
    }

    /// Step over any value whose strings are all valid UTF-8 and whose map keys are
    /// strings; None (decline) for anything else or nesting deeper than MAX_DEPTH.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let first = self.peek()?;
        match first {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {
                self.at += 1;
            }
            0xcc..=0xd3 => {
                self.int()?;
            }
            0xca => {
                self.take(5)?;
            }
            0xcb => {
                self.take(9)?;
            }
            0xa0..=0xbf | 0xd9..=0xdb => {
                self.checked_str()?;
            }
            0xc4..=0xc6 => {
                self.at += 1;
                let len = self.be(1 << (first - 0xc4))?;
                self.take(usize::try_from(len).ok()?)?;
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                for _ in 0..self.array_len()? {
                    self.skip_nested(depth + 1)?;
                }
            }
            0x80..=0x8f | 0xde | 0xdf => {
                for _ in 0..self.map_len()? {
                    self.checked_str()?;
                    self.skip_nested(depth + 1)?;
                }
            }
            // ext values (other than a record's timestamp) and the reserved 0xc1: decline
            _ => return None,
        }
        Some(())
    }

    /// `skip` for one value of a record, with the scalars most fields hold stepped over in line.
    #[inline]
    fn skip_value(&mut self) -> Option<()> {
        self.skip_nested(1)
    }

    /// `skip(depth)`, with scalars and short strings stepped over in line.
    #[inline]
    fn skip_nested(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {
                self.at += 1;
                Some(())
            }
            first @ 0xa0..=0xbf => {
                self.at += 1;
                utf8(self.take(usize::from(first & 0x1f))?)
            }
            _ => self.skip(depth),
        }
    }

    fn timestamp(&mut self) -> Option<Stamp> {
        let first = self.peek()?;
        match first {
            0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => Some(match self.int()?.to_i64() {
                Some(ns) if ns >= 0 => Stamp::Ns(ns),
                _ => Stamp::Invalid,
            }),
            0xc0 | 0xc2 | 0xc3 | 0xca | 0xcb => {
                self.skip(0)?;
                Some(Stamp::Invalid)
            }
            0xa0..=0xbf | 0xd9..=0xdb => Some(rfc3339_ns(self.str()?)?),
            0xd6 | 0xd7 | 0xc7 => self.ext_timestamp(),
            _ => None,
        }
    }

    /// The msgpack timestamp extension (type -1), to the nanosecond, as timestamps.py reads it.
    fn ext_timestamp(&mut self) -> Option<Stamp> {
        let first = self.byte()?;
        let len = match first {
            0xd6 => 4,
            0xd7 => 8,
            _ => self.be(1)?, // ext 8: only the 12-byte form is a timestamp
        };
        if self.byte()? != 0xff {
            return None;
        }
        let (seconds, nanos) = match len {
            4 => (self.be(4)? as i64, 0u64),
            8 => {
                let both = self.be(8)?;
                ((both & 0x3_ffff_ffff) as i64, both >> 34)
            }
            12 => {
                let nanos = self.be(4)?;
                (self.be(8)? as i64, nanos)
            }
            _ => return None,
        };
        // Outside 1970..=9999 or a malformed nanosecond field: let the reference decide.
        if !(0..=253_402_300_799).contains(&seconds) || nanos >= 1_000_000_000 {
            return None;
        }
        let ns = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        Some(i64::try_from(ns).map_or(Stamp::Invalid, Stamp::Ns))
    }
}

/// Whether `bytes` are UTF-8 (ASCII checked first: most are), as an Option for `?`.
#[inline]
fn utf8(bytes: &[u8]) -> Option<()> {
    (bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()).then_some(())
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn digits(text: &[u8]) -> Option<i64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        text.iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
    )
}

/// An RFC 3339 timestamp with offset, as timestamps.parse_rfc3339_ns reads it; None
/// (decline) for any text that is not plainly such a timestamp.
fn rfc3339_ns(text: &str) -> Option<Stamp> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let mut rest = &b[19..];
    let mut frac = 0i64;
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        frac = digits(&rest[1..=n])? * 10i64.pow(9 - n as u32);
        rest = &rest[1 + n..];
    }
    let offset_s = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let s = h * 3600 + m * 60;
            if *sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    let ns = i128::from(seconds) * 1_000_000_000 + i128::from(frac);
    Some(match i64::try_from(ns) {
        Ok(ns) if ns >= 0 => Stamp::Ns(ns),
        _ => Stamp::Invalid,
    })
}

fn identifier<'a>(reader: &mut Reader<'a>) -> Option<&'a str> {
    let text = reader.str()?;
    (text.len() <= MAX_ID_CHARS || text.chars().count() <= MAX_ID_CHARS).then_some(text)
}

fn latency_total(reader: &mut Reader<'_>) -> Option<i64> {
    let mut total = None;
    for _ in 0..reader.map_len()? {
        let key = reader.raw_str()?;
        if key == b"total" {
            if total.is_some() {
                return None; // a duplicate key: decline
            }
            total = Some(reader.int()?.to_i64()?);
        } else {
            utf8(key)?;
            reader.skip_value()?;
        }
    }
    Some(total.unwrap_or(0))
}

fn record<'a>(reader: &mut Reader<'a>, out: &mut AnalyticsColumns<'a>) -> Option<()> {
    let (mut ts, mut org, mut api, mut code, mut latency) = (None, None, None, None, None);
    for _ in 0..reader.map_len()? {
        let key = reader.raw_str()?;
        let seen = match key {
            b"timestamp" => ts.replace(reader.timestamp()?).is_some(),
            b"org_id" => org.replace(identifier(reader)?).is_some(),
            b"api_id" => api.replace(identifier(reader)?).is_some(),
            b"response_code" => {
                let value = reader.int()?.to_i64().filter(|c| (-1..=999).contains(c))?;
                code.replace(value).is_some()
            }
            b"latency" => latency.replace(latency_total(reader)?).is_some(),
            _ => {
                utf8(key)?;
                reader.skip_value()?;
                false
            }
        };
        if seen {
            return None; // a duplicate key: decline
        }
    }
    out.timestamp_ns.push(match ts? {
        Stamp::Ns(ns) => ns,
        Stamp::Invalid => INVALID_NS,
    });
    out.org_id.push(org?);
    out.api_id.push(api?);
    out.response_code.push(code?);
    out.latency_ms.push(latency.unwrap_or(0));
    Some(())
}

/// The columns of a msgpack `tyk.analytics` payload of exactly `count` records,
/// or None when the reference decoder must judge it (see the module docs).
pub fn decode_analytics(payload: &[u8], count: usize) -> Option<AnalyticsColumns<'_>> {
    let mut reader = Reader {
        data: payload,
        at: 0,
    };
    if reader.array_len()? != count {
        return None;
    }
    // Reserved up front so the columns do not grow record by record; bounded, so that a
    // payload whose header claims millions of records reserves no more than a real one.
    let records = count.min(RESERVE_RECORDS);
    let mut out = AnalyticsColumns {
        timestamp_ns: Vec::with_capacity(records),
        org_id: Dictionary::with_capacity(records),
        api_id: Dictionary::with_capacity(records),
        response_code: Vec::with_capacity(records),
        latency_ms: Vec::with_capacity(records),
    };
    for _ in 0..count {
        record(&mut reader, &mut out)?;
    }
    (reader.at == payload.len()).then_some(out)
}

/// The fields of a version-1 envelope (PROTOCOL.md, frame 2) the receive side keeps.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub node: &'a str,
    pub boot: i64,
    pub seq: i64,
    pub sent: i64,
    pub count: usize,
}

/// The envelope of a msgpack message the reference decoder (codec.py's `Envelope` and
/// `_envelope_problem`) accepts as it is: every field once and of its type, `v` 1, `enc`
/// "msgpack", `boot` and `seq` >= 0, `count` <= `max_records`, a `node` of 1..=`max_node_bytes`
/// printable ASCII characters, unknown keys stepped over, nothing after the map. None for
/// anything else, so the reference decoder judges it and gives the reason.
pub fn decode_envelope(
    data: &[u8],
    max_records: usize,
    max_node_bytes: usize,
) -> Option<Envelope<'_>> {
    let mut reader = Reader { data, at: 0 };
    let (mut v, mut node, mut boot, mut seq, mut sent, mut count, mut enc) =
        (None, None, None, None, None, None, None);
    for _ in 0..reader.map_len()? {
        let key = reader.str()?;
        // a repeated key declines (`replace` returning Some): which one counts is the reference's call
        let repeated = match key {
            "v" => v.replace(reader.int()?.to_i64()?).is_some(),
            "node" => node.replace(reader.str()?).is_some(),
            "boot" => boot.replace(reader.int()?.to_i64()?).is_some(),
            "seq" => seq.replace(reader.int()?.to_i64()?).is_some(),
            "sent" => sent.replace(reader.int()?.to_i64()?).is_some(),
            "count" => count.replace(reader.int()?.to_i64()?).is_some(),
            "enc" => enc.replace(reader.str()?).is_some(),
            _ => reader.skip(1).is_none(),
        };
        if repeated {
            return None;
        }
    }
    let node = node?;
    let printable = |b: &u8| (0x20..=0x7e).contains(b);
    let count = usize::try_from(count?).ok()?;
    let envelope = Envelope {
        node,
        boot: boot?,
        seq: seq?,
        sent: sent?,
        count,
    };
    (reader.at == data.len()
        && v? == 1
        && enc? == "msgpack"
        && count <= max_records
        && !node.is_empty()
        && node.len() <= max_node_bytes
        && node.as_bytes().iter().all(printable)
        && envelope.boot >= 0
        && envelope.seq >= 0)
        .then_some(envelope)
}

/// The maps and arrays a msgpack value holds, at every depth, when `payload` is exactly one
/// value and holds at most `limit` of them; None otherwise (more, malformed, cut short, trailing
/// bytes). What decoding it into Python objects would build, known without building anything:
/// one byte can be a whole map, and a Python dict costs ~70 bytes. O(payload), no recursion: a
/// count of the values still to read stands for the nesting.
pub fn containers_within(payload: &[u8], limit: usize) -> Option<usize> {
    let mut reader = Reader {
        data: payload,
        at: 0,
    };
    let (mut pending, mut containers) = (1u64, 0usize);
    while pending > 0 {
        pending -= 1;
        let first = reader.byte()?;
        let (elements, skip) = match first {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x90..=0x9f => (u64::from(first & 0x0f), 0),
            0xdc => (reader.be(2)?, 0),
            0xdd => (reader.be(4)?, 0),
            0x80..=0x8f => (2 * u64::from(first & 0x0f), 0),
            0xde => (2 * reader.be(2)?, 0),
            0xdf => (2 * reader.be(4)?, 0),
            0xa0..=0xbf => (0, u64::from(first & 0x1f)),
            0xcc..=0xcf => (0, 1 << (first - 0xcc)),
            0xd0..=0xd3 => (0, 1 << (first - 0xd0)),
            0xca => (0, 4),
            0xcb => (0, 8),
            0xd9 | 0xc4 => (0, reader.be(1)?),
            0xda | 0xc5 => (0, reader.be(2)?),
            0xdb | 0xc6 => (0, reader.be(4)?),
            0xd4..=0xd8 => (0, 1 + (1 << (first - 0xd4))), // fixext: type, then 1..16 bytes
            0xc7 => (0, 1 + reader.be(1)?),
            0xc8 => (0, 1 + reader.be(2)?),
            0xc9 => (0, 1 + reader.be(4)?),
            0xc1 => return None, // never used
        };
        if matches!(first, 0x80..=0x9f | 0xdc..=0xdf) {
            containers += 1;
            if containers > limit {
                return None;
            }
        }
        reader.take(usize::try_from(skip).ok()?)?;
        // every value takes a byte at least: a header claiming more than the payload holds ends
        // at its end, so the count cannot run away
        pending = pending.checked_add(elements)?;
    }
    (reader.at == payload.len()).then_some(containers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(text: &str) -> Option<i64> {
        match rfc3339_ns(text)? {
            Stamp::Ns(ns) => Some(ns),
            Stamp::Invalid => Some(INVALID_NS),
        }
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            ns("2026-11-27T10:15:02.123456789Z"),
            Some(1_795_774_502_123_456_789)
        );
        assert_eq!(
            ns("2026-11-27t11:15:02.5+01:00"),
            Some(1_795_774_502_500_000_000)
        );
        assert_eq!(ns("1969-12-31T23:59:59Z"), Some(INVALID_NS));
        assert_eq!(ns("2026-02-29T00:00:00Z"), None);
        assert_eq!(ns("2026-11-27T10:15:02.1234567891Z"), None);
        assert_eq!(ns("2026-11-27T10:15:02Z\n"), None);
    }

    #[test]
    fn containers_are_counted_without_building() {
        // [{"a": [1, {}]}, "x", b"\x00", ext 5, 1.5]
        let value =
            b"\x95\x81\xa1a\x92\x01\x80\xa1x\xc4\x01\x00\xd4\x05\x00\xcb\x3f\xf8\0\0\0\0\0\0";
        assert_eq!(containers_within(value, 10), Some(4));
        assert_eq!(containers_within(value, 3), None);
        assert_eq!(containers_within(&value[..value.len() - 1], 10), None);
        assert_eq!(
            containers_within(&[value.as_slice(), b"\x00"].concat(), 10),
            None
        );
        // an array header claiming 4 G elements over 3 bytes: cut short, not a runaway
        assert_eq!(
            containers_within(b"\xdd\xff\xff\xff\xff\x80\x80\x80", 10),
            None
        );
        assert_eq!(containers_within(b"\xc1", 10), None);
    }

    #[test]
    fn one_record() {
        // [{"timestamp": 5, "org_id": "o", "api_id": "a", "response_code": 200, "x": [1]}]
        let mut payload = vec![0x91, 0x85];
        payload.extend(b"\xa9timestamp\x05\xa6org_id\xa1o\xa6api_id\xa1a");
        payload.extend(b"\xadresponse_code\xcc\xc8\xa1x\x91\x01");
        let out = decode_analytics(&payload, 1).expect("decoded");
        assert_eq!(out.timestamp_ns, vec![5]);
        assert_eq!(out.response_code, vec![200]);
        assert_eq!(out.org_id.expand(), vec!["o"]);
        assert_eq!(out.latency_ms, vec![0]);
        assert_eq!(decode_analytics(&payload, 2), None);
        payload.push(0);
        assert_eq!(decode_analytics(&payload, 1), None);
    }

    /// The timestamp column of `[{"timestamp": <ext>, "org_id": "o", "api_id": "a", "response_code": 200}]`,
    /// or None when declined.
    fn ext_stamp(ext: &[u8]) -> Option<i64> {
        let mut payload = vec![0x91, 0x84];
        payload.extend(b"\xa9timestamp");
        payload.extend(ext);
        payload.extend(b"\xa6org_id\xa1o\xa6api_id\xa1a\xadresponse_code\xcc\xc8");
        Some(decode_analytics(&payload, 1)?.timestamp_ns[0])
    }

    fn ext8(seconds: u64, nanos: u64) -> Vec<u8> {
        [&[0xd7, 0xff][..], &(nanos << 34 | seconds).to_be_bytes()].concat()
    }

    fn ext12(seconds: i64, nanos: u32) -> Vec<u8> {
        [
            &[0xc7, 12, 0xff][..],
            &nanos.to_be_bytes(),
            &seconds.to_be_bytes(),
        ]
        .concat()
    }

    #[test]
    fn timestamp_extensions_are_read_to_the_nanosecond() {
        let edge = 1_795_774_560; // a whole minute
        assert_eq!(
            ext_stamp(&[&[0xd6, 0xff][..], &(edge as u32).to_be_bytes()].concat()),
            Some(edge * 1_000_000_000)
        );
        for nanos in [999_999_999, 999_999_500, 500, 1] {
            let want = Some((edge - 1) * 1_000_000_000 + i64::from(nanos));
            assert_eq!(ext_stamp(&ext8(edge as u64 - 1, u64::from(nanos))), want);
            assert_eq!(ext_stamp(&ext12(edge - 1, nanos)), want);
        }
        // past int64 nanoseconds: invalid, as the reference has it
        assert_eq!(
            ext_stamp(&ext12(9_223_372_036, 854_775_807)),
            Some(i64::MAX)
        );
        assert_eq!(
            ext_stamp(&ext12(9_223_372_036, 854_775_808)),
            Some(INVALID_NS)
        );
        // malformed nanoseconds and seconds outside 1970..=9999 are the reference's to judge
        assert_eq!(ext_stamp(&ext8(edge as u64, 1_000_000_000)), None);
        assert_eq!(ext_stamp(&ext12(edge, 1_000_000_000)), None);
        assert_eq!(ext_stamp(&ext12(-1, 999_999_999)), None);
        assert_eq!(ext_stamp(&ext12(253_402_300_800, 0)), None);
    }

    fn envelope_bytes(fields: &[(&str, Value)]) -> Vec<u8> {
        let mut out = vec![0x80 | fields.len() as u8];
        for (key, value) in fields {
            out.push(0xa0 | key.len() as u8);
            out.extend_from_slice(key.as_bytes());
            match value {
                Value::Int(n) => {
                    out.push(0xd3);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                Value::Str(text) => {
                    out.push(0xd9);
                    out.push(text.len() as u8);
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out
    }

    enum Value {
        Int(i64),
        Str(&'static str),
    }

    fn usual() -> Vec<(&'static str, Value)> {
        vec![
            ("v", Value::Int(1)),
            ("node", Value::Str("gw-1")),
            ("boot", Value::Int(1_700_000_000_000)),
            ("seq", Value::Int(7)),
            ("sent", Value::Int(-5)),
            ("count", Value::Int(3)),
            ("enc", Value::Str("msgpack")),
        ]
    }

    #[test]
    fn the_usual_envelope_is_read() {
        let data = envelope_bytes(&usual());
        let expected = Envelope {
            node: "gw-1",
            boot: 1_700_000_000_000,
            seq: 7,
            sent: -5,
            count: 3,
        };
        assert_eq!(decode_envelope(&data, 100_000, 128), Some(expected));
    }

    #[test]
    fn anything_the_reference_would_judge_declines() {
        let read =
            |fields: &[(&str, Value)]| decode_envelope(&envelope_bytes(fields), 100, 8).is_some();
        let with = |key: &'static str, value: Value| {
            let mut fields = usual();
            fields.retain(|(k, _)| *k != key);
            fields.push((key, value));
            read(&fields)
        };
        assert!(read(&usual()));
        assert!(!with("v", Value::Int(2)));
        assert!(!with("enc", Value::Str("json")));
        assert!(!with("count", Value::Int(101)));
        assert!(!with("count", Value::Int(-1)));
        assert!(!with("seq", Value::Int(-1)));
        assert!(!with("boot", Value::Int(-1)));
        assert!(!with("sent", Value::Str("now")));
        assert!(!with("node", Value::Str("")));
        assert!(!with("node", Value::Str("123456789")));
        assert!(!with("node", Value::Str("gw\n1")));
        assert!(!with("node", Value::Int(1)));
        let mut repeated = usual();
        repeated.push(("seq", Value::Int(8)));
        assert!(!read(&repeated));
        let mut missing = usual();
        missing.retain(|(k, _)| *k != "sent");
        assert!(!read(&missing));
        let mut trailing = envelope_bytes(&usual());
        trailing.push(0xc0);
        assert!(decode_envelope(&trailing, 100, 8).is_none());
        assert!(decode_envelope(&trailing[..trailing.len() - 3], 100, 8).is_none());
        let mut unknown = usual();
        unknown.push(("x", Value::Str("later versions")));
        assert!(read(&unknown));
    }
}
