//! The analytics columns of one flush, built message by message.
//!
//! A message's columns (`MessageColumns`) own their few distinct ids, so they
//! outlive the payload they were decoded from: a worker decodes a message, checks
//! its sequence, and only then appends it to the flush (`FlushColumns`), or drops
//! it as a duplicate. Appending re-codes the message's ids into the flush's
//! dictionaries: one lookup per distinct id of the message, not one per record.

use crate::decode::{AnalyticsColumns, Dictionary, IdMap};

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
    fn append(&mut self, column: &OwnedDictionary) {
        let recode: Vec<u32> = column
            .values
            .iter()
            .map(|value| match self.index.get(value) {
                Some(code) => *code,
                None => {
                    let code = self.values.len() as u32;
                    self.values.push(value.clone());
                    self.index.insert(value.clone(), code);
                    code
                }
            })
            .collect();
        self.codes
            .extend(column.codes.iter().map(|c| recode[*c as usize]));
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
    pub fn append(&mut self, message: &MessageColumns) {
        self.timestamp_ns.extend_from_slice(&message.timestamp_ns);
        self.org_id.append(&message.org_id);
        self.api_id.append(&message.api_id);
        self.response_code.extend_from_slice(&message.response_code);
        self.latency_ms.extend_from_slice(&message.latency_ms);
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
}
