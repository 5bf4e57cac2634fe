//! The analytics columns of one flush, built message by message.
//!
//! A message's columns (`MessageColumns`) own their few distinct ids, so they
//! outlive the payload they were decoded from: a worker decodes a message, checks
//! its sequence, and only then appends it to the flush (`FlushColumns`), or drops
//! it as a duplicate. Appending re-codes the message's ids into the flush's
//! dictionaries: one lookup per distinct id of the message, not one per record.

use crate::decode::{decode_analytics, AnalyticsColumns, Dictionary, IdMap};

/// A dictionary-encoded string column that owns its values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OwnedDictionary {
    pub values: Vec<String>,
    pub codes: Vec<u32>,
}

impl OwnedDictionary {
    fn from_borrowed(dictionary: &Dictionary<'_>) -> Self {
        Self {
            values: dictionary.values.iter().map(|v| (*v).to_owned()).collect(),
            codes: dictionary.codes.clone(),
        }
    }

    /// Dictionary-encode plain strings (the reference decoder's records).
    pub fn encode(texts: Vec<String>) -> Self {
        let mut index: IdMap<String> = IdMap::default();
        let mut values = Vec::new();
        let codes = texts
            .into_iter()
            .map(|text| {
                let next = values.len() as u32;
                *index.entry(text).or_insert_with_key(|text| {
                    values.push(text.clone());
                    next
                })
            })
            .collect();
        Self { values, codes }
    }

    /// The column as plain strings.
    pub fn expand(&self) -> Vec<&str> {
        self.codes
            .iter()
            .map(|c| self.values[*c as usize].as_str())
            .collect()
    }
}

/// One message's analytics records; timestamps in unix ns (`decode::INVALID_NS` when invalid).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MessageColumns {
    pub timestamp_ns: Vec<i64>,
    pub org_id: OwnedDictionary,
    pub api_id: OwnedDictionary,
    pub response_code: Vec<i64>,
    pub latency_ms: Vec<i64>,
}

impl MessageColumns {
    pub fn len(&self) -> usize {
        self.timestamp_ns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamp_ns.is_empty()
    }
}

impl From<AnalyticsColumns<'_>> for MessageColumns {
    fn from(columns: AnalyticsColumns<'_>) -> Self {
        Self {
            org_id: OwnedDictionary::from_borrowed(&columns.org_id),
            api_id: OwnedDictionary::from_borrowed(&columns.api_id),
            timestamp_ns: columns.timestamp_ns,
            response_code: columns.response_code,
            latency_ms: columns.latency_ms,
        }
    }
}

/// The distinct strings of one column across a flush, each with its flush-wide code.
#[derive(Debug, Default)]
struct FlushDictionary {
    values: Vec<String>,
    index: IdMap<String>,
    codes: Vec<u32>,
}

impl FlushDictionary {
    /// One message's column (its distinct `values`, and `codes` into them), re-coded into the flush's.
    fn append<S: AsRef<str>>(&mut self, values: &[S], codes: &[u32]) {
        let recode: Vec<u32> = values
            .iter()
            .map(|value| {
                let value = value.as_ref();
                match self.index.get(value) {
                    Some(code) => *code,
                    None => {
                        let code = self.values.len() as u32;
                        self.values.push(value.to_owned());
                        self.index.insert(value.to_owned(), code);
                        code
                    }
                }
            })
            .collect();
        self.codes.extend(codes.iter().map(|c| recode[*c as usize]));
    }
}

/// The analytics records of a flush, in the order their messages were appended.
#[derive(Debug, Default)]
pub struct FlushColumns {
    pub timestamp_ns: Vec<i64>,
    org_id: FlushDictionary,
    api_id: FlushDictionary,
    pub response_code: Vec<i64>,
    pub latency_ms: Vec<i64>,
}

impl FlushColumns {
    pub fn append(&mut self, m: &MessageColumns) {
        let ids = [
            (&m.org_id.values[..], &m.org_id.codes[..]),
            (&m.api_id.values, &m.api_id.codes),
        ];
        self.extend(&m.timestamp_ns, ids, &m.response_code, &m.latency_ms);
    }

    /// Columns decoded from a payload still borrowed (`decode::decode_analytics`), appended
    /// without owning its ids first.
    pub fn append_decoded(&mut self, m: &AnalyticsColumns<'_>) {
        let ids = [
            (&m.org_id.values[..], &m.org_id.codes[..]),
            (&m.api_id.values, &m.api_id.codes),
        ];
        self.extend(&m.timestamp_ns, ids, &m.response_code, &m.latency_ms);
    }

    /// One message's columns, its [org, api] ids as (distinct values, codes into them).
    fn extend<S: AsRef<str>>(
        &mut self,
        timestamp_ns: &[i64],
        [org_id, api_id]: [(&[S], &[u32]); 2],
        response_code: &[i64],
        latency_ms: &[i64],
    ) {
        self.timestamp_ns.extend_from_slice(timestamp_ns);
        self.org_id.append(org_id.0, org_id.1);
        self.api_id.append(api_id.0, api_id.1);
        self.response_code.extend_from_slice(response_code);
        self.latency_ms.extend_from_slice(latency_ms);
    }

    /// Msgpack analytics payloads, each of its count of records, decoded and appended in order
    /// until one is not what `decode::decode_analytics` accepts; how many were appended (the rest,
    /// from the one declined, are left to the caller, which judges that one the reference way).
    pub fn append_payloads(&mut self, payloads: &[(&[u8], usize)]) -> usize {
        for (appended, (payload, count)) in payloads.iter().enumerate() {
            match decode_analytics(payload, *count) {
                Some(columns) => self.append_decoded(&columns),
                None => return appended,
            }
        }
        payloads.len()
    }

    pub fn len(&self) -> usize {
        self.timestamp_ns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamp_ns.is_empty()
    }

    /// (distinct values, codes) of the org id column.
    pub fn org_id(&self) -> (&[String], &[u32]) {
        (&self.org_id.values, &self.org_id.codes)
    }

    /// (distinct values, codes) of the API id column.
    pub fn api_id(&self) -> (&[String], &[u32]) {
        (&self.api_id.values, &self.api_id.codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(org: &[&str], api: &[&str]) -> MessageColumns {
        let n = org.len();
        MessageColumns {
            timestamp_ns: (0..n as i64).collect(),
            org_id: OwnedDictionary::encode(org.iter().map(|s| (*s).to_owned()).collect()),
            api_id: OwnedDictionary::encode(api.iter().map(|s| (*s).to_owned()).collect()),
            response_code: vec![200; n],
            latency_ms: vec![1; n],
        }
    }

    #[test]
    fn encoding_keeps_each_distinct_value_once_in_order_of_appearance() {
        let column = OwnedDictionary::encode(vec!["b".into(), "a".into(), "b".into()]);
        assert_eq!(column.values, vec!["b", "a"]);
        assert_eq!(column.codes, vec![0, 1, 0]);
        assert_eq!(column.expand(), vec!["b", "a", "b"]);
    }

    #[test]
    fn appended_messages_share_one_dictionary_per_column() {
        let mut flush = FlushColumns::default();
        flush.append(&message(&["o1", "o2"], &["a", "b"]));
        flush.append(&message(&["o2", "o3", "o1"], &["b", "c", "a"]));
        assert_eq!(flush.len(), 5);
        let (values, codes) = flush.org_id();
        let expanded: Vec<&str> = codes.iter().map(|c| values[*c as usize].as_str()).collect();
        assert_eq!(expanded, vec!["o1", "o2", "o2", "o3", "o1"]);
        assert_eq!(values.len(), 3);
        let (values, codes) = flush.api_id();
        let expanded: Vec<&str> = codes.iter().map(|c| values[*c as usize].as_str()).collect();
        assert_eq!(expanded, vec!["a", "b", "b", "c", "a"]);
        assert_eq!(flush.timestamp_ns, vec![0, 1, 0, 1, 2]);
    }

    /// [{"timestamp": ts, "org_id": org, "api_id": "a", "response_code": 200}]
    fn payload(ts: u8, org: &str) -> Vec<u8> {
        let mut out = vec![0x91, 0x84, 0xa9];
        out.extend(b"timestamp");
        out.push(ts);
        out.push(0xa6);
        out.extend(b"org_id");
        out.push(0xa0 | org.len() as u8);
        out.extend(org.as_bytes());
        out.extend(b"\xa6api_id\xa1a\xadresponse_code\xcc\xc8");
        out
    }

    #[test]
    fn payloads_are_appended_in_order_until_one_is_declined() {
        let (first, second, third) = (payload(1, "o2"), payload(2, "o1"), payload(3, "o2"));
        let mut flush = FlushColumns::default();
        flush.append(&message(&["o1"], &["a"]));
        let declined = b"\x91\xc1".as_slice();
        let added = flush.append_payloads(&[(&first, 1), (&second, 1), (declined, 1), (&third, 1)]);
        assert_eq!(added, 2);
        assert_eq!(flush.timestamp_ns, vec![0, 1, 2]);
        let (values, codes) = flush.org_id();
        let expanded: Vec<&str> = codes.iter().map(|c| values[*c as usize].as_str()).collect();
        assert_eq!(expanded, vec!["o1", "o2", "o1"]);
        // a count that is not the payload's declines it too, before anything of it is appended
        assert_eq!(flush.append_payloads(&[(&third, 1), (&first, 2)]), 1);
        assert_eq!(flush.timestamp_ns, vec![0, 1, 2, 3]);
        assert_eq!(flush.append_payloads(&[]), 0);
    }
}
