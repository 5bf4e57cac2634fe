//! The traffic rollup of one flush: requests per (window, org, API), their status
//! classes and latency histogram, aggregated in one pass over the flush's columns.
//!
//! The Python reference (a polars group-by, kept in the tests) builds the same rows;
//! the output is sorted by key, and each key's buckets ascending, so a flush's
//! partial rows do not depend on hash order.

use std::collections::HashMap;

/// The latency histogram's bucket boundaries: `thresholds[k - 1]` is the smallest value
/// whose bucket is `k` or more. The Python side derives them from its own bucket
/// function (`LogHistogram.thresholds`), so both agree on every value by construction.
#[derive(Debug, Clone)]
pub struct Buckets<'a> {
    thresholds: &'a [i64],
    /// The bucket of each value below its length: most latencies are small, and a
    /// lookup is cheaper than the binary search.
    small: Vec<u16>,
}

const SMALL_VALUES: i64 = 1 << 14;

impl<'a> Buckets<'a> {
    /// None when the thresholds are not ascending or give more than u16::MAX buckets.
    pub fn new(thresholds: &'a [i64]) -> Option<Self> {
        if thresholds.len() > usize::from(u16::MAX) || thresholds.windows(2).any(|w| w[0] > w[1]) {
            return None;
        }
        let mut buckets = Self {
            thresholds,
            small: Vec::new(),
        };
        buckets.small = (0..SMALL_VALUES).map(|v| buckets.search(v)).collect();
        Some(buckets)
    }

    fn search(&self, value: i64) -> u16 {
        // fits: new() refuses more than u16::MAX thresholds
        self.thresholds.partition_point(|t| *t <= value) as u16
    }

    pub fn bucket(&self, value: i64) -> u16 {
        match usize::try_from(value) {
            Ok(index) if index < self.small.len() => self.small[index],
            Ok(_) => self.search(value),
            Err(_) => 0, // negative
        }
    }
}

/// One flush's analytics records, as the traffic rollup reads them (all of one length).
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    pub window_start: &'a [u32],
    pub org: &'a [u32],
    pub api: &'a [u32],
    pub response_code: &'a [i64],
    pub latency_ms: &'a [i64],
}

impl Records<'_> {
    pub fn len(&self) -> usize {
        self.window_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.window_start.is_empty()
    }

    fn consistent(&self) -> bool {
        let n = self.len();
        [
            self.org.len(),
            self.api.len(),
            self.response_code.len(),
            self.latency_ms.len(),
        ] == [n; 4]
    }
}

/// The partial rows: one per (window, org code, API code), sorted by it; the histogram of
/// row `i` is `buckets[offsets[i]..offsets[i + 1]]` with the matching `counts` (`offsets`
/// has one entry more than there are rows, as Arrow's list offsets).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrafficRows {
    pub window_start: Vec<u32>,
    pub org: Vec<u32>,
    pub api: Vec<u32>,
    pub requests: Vec<u64>,
    pub status_4xx: Vec<u64>,
    pub status_429: Vec<u64>,
    pub status_5xx: Vec<u64>,
    pub offsets: Vec<i64>,
    pub buckets: Vec<u16>,
    pub counts: Vec<u64>,
}

type Key = (u32, u32, u32);

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u64,
    status_4xx: u64,
    status_429: u64,
    status_5xx: u64,
}

fn pack((window, org, api): Key, bucket: u16) -> u128 {
    (u128::from(window) << 96)
        | (u128::from(org) << 64)
        | (u128::from(api) << 32)
        | u128::from(bucket)
}

fn unpack(cell: u128) -> (Key, u16) {
    let word = |shift: u32| (cell >> shift) as u32; // truncates to the 32 bits packed there
    ((word(96), word(64), word(32)), cell as u16)
}

/// The traffic rows of `records`; None when the columns differ in length. Records with a
/// negative response code are Tyk's network-stat records, not requests, and are left out.
pub fn aggregate(records: Records<'_>, buckets: &Buckets<'_>) -> Option<TrafficRows> {
    if !records.consistent() {
        return None;
    }
    // One lookup per record, keyed as the reference's first group-by: (key, bucket), packed
    // into one integer so that sorting the cells sorts by key, then bucket.
    let mut cells: HashMap<u128, Counts, foldhash::fast::RandomState> = HashMap::default();
    for i in 0..records.len() {
        let code = records.response_code[i];
        if code < 0 {
            continue;
        }
        let cell = cells
            .entry(pack(
                (records.window_start[i], records.org[i], records.api[i]),
                buckets.bucket(records.latency_ms[i]),
            ))
            .or_default();
        cell.requests += 1;
        cell.status_4xx += u64::from((400..=499).contains(&code));
        cell.status_429 += u64::from(code == 429);
        cell.status_5xx += u64::from((500..=599).contains(&code));
    }
    let mut sorted: Vec<(u128, Counts)> = cells.into_iter().collect();
    sorted.sort_unstable_by_key(|(cell, _)| *cell);
    let sorted = sorted
        .into_iter()
        .map(|(cell, counts)| (unpack(cell), counts));

    let mut rows = TrafficRows::default();
    let mut last: Option<Key> = None;
    for ((key, bucket), counts) in sorted {
        if last != Some(key) {
            last = Some(key);
            rows.offsets.push(rows.buckets.len() as i64);
            rows.window_start.push(key.0);
            rows.org.push(key.1);
            rows.api.push(key.2);
            rows.requests.push(0);
            rows.status_4xx.push(0);
            rows.status_429.push(0);
            rows.status_5xx.push(0);
        }
        let row = rows.requests.len() - 1;
        rows.requests[row] += counts.requests;
        rows.status_4xx[row] += counts.status_4xx;
        rows.status_429[row] += counts.status_429;
        rows.status_5xx[row] += counts.status_5xx;
        rows.buckets.push(bucket);
        rows.counts.push(counts.requests);
    }
    rows.offsets.push(rows.buckets.len() as i64);
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    // gamma = 2: bucket 1 is 1, bucket 2 is 2, bucket 3 is 3..=4, bucket 4 is 5..=8
    const THRESHOLDS: [i64; 4] = [1, 2, 3, 5];

    fn records<'a>(
        window_start: &'a [u32],
        org: &'a [u32],
        api: &'a [u32],
        response_code: &'a [i64],
        latency_ms: &'a [i64],
    ) -> Records<'a> {
        Records {
            window_start,
            org,
            api,
            response_code,
            latency_ms,
        }
    }

    #[test]
    fn values_fall_into_the_bucket_their_thresholds_give() {
        let buckets = Buckets::new(&THRESHOLDS).unwrap();
        let got: Vec<u16> = [-5, 0, 1, 2, 3, 4, 5, 8, 9, 1 << 20, i64::MAX]
            .iter()
            .map(|v| buckets.bucket(*v))
            .collect();
        assert_eq!(got, vec![0, 0, 1, 2, 3, 3, 4, 4, 4, 4, 4]);
    }

    #[test]
    fn thresholds_out_of_order_are_refused() {
        assert!(Buckets::new(&[1, 3, 2]).is_none());
        assert!(Buckets::new(&[1, 1, 2]).is_some());
    }

    #[test]
    fn rows_are_sorted_by_key_with_their_buckets_ascending() {
        let buckets = Buckets::new(&THRESHOLDS).unwrap();
        let rows = aggregate(
            records(
                &[60, 0, 0, 0, 0],
                &[1, 2, 2, 2, 2],
                &[0, 7, 7, 7, 3],
                &[200, 429, 503, 404, 200],
                &[4, 8, 0, 8, 1],
            ),
            &buckets,
        )
        .unwrap();
        assert_eq!(rows.window_start, vec![0, 0, 60]);
        assert_eq!(rows.org, vec![2, 2, 1]);
        assert_eq!(rows.api, vec![3, 7, 0]);
        assert_eq!(rows.requests, vec![1, 3, 1]);
        assert_eq!(rows.status_4xx, vec![0, 2, 0]);
        assert_eq!(rows.status_429, vec![0, 1, 0]);
        assert_eq!(rows.status_5xx, vec![0, 1, 0]);
        assert_eq!(rows.offsets, vec![0, 1, 3, 4]);
        assert_eq!(rows.buckets, vec![1, 0, 4, 3]);
        assert_eq!(rows.counts, vec![1, 1, 2, 1]);
    }

    #[test]
    fn network_stat_records_are_not_requests() {
        let buckets = Buckets::new(&THRESHOLDS).unwrap();
        let rows = aggregate(
            records(&[0, 0], &[0, 0], &[0, 0], &[-1, -1], &[3, 3]),
            &buckets,
        )
        .unwrap();
        assert!(rows.requests.is_empty());
        assert_eq!(rows.offsets, vec![0]);
    }

    #[test]
    fn a_cell_packs_and_unpacks_whole_at_every_extreme() {
        for key in [
            (0, 0, 0),
            (u32::MAX, u32::MAX, u32::MAX),
            (u32::MAX, 0, 1),
            (1, u32::MAX, 0),
        ] {
            for bucket in [0, 1, u16::MAX] {
                assert_eq!(unpack(pack(key, bucket)), (key, bucket));
            }
        }
        assert!(pack((1, 0, 0), 0) > pack((0, u32::MAX, u32::MAX), u16::MAX));
    }

    #[test]
    fn columns_of_different_lengths_are_refused() {
        let buckets = Buckets::new(&THRESHOLDS).unwrap();
        assert!(aggregate(
            records(&[0, 0], &[0], &[0, 0], &[200, 200], &[1, 1]),
            &buckets
        )
        .is_none());
    }
}
