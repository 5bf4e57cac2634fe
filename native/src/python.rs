//! The Python module `pipelines._native`: argument conversion only; the work is in
//! the plain-Rust modules. Large inputs are checksummed with the GIL released.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::decode;
use crate::flush::{FlushColumns, MessageColumns, OwnedDictionary};
use crate::json;
use crate::traffic;
use crate::wal;

/// Below this many bytes a checksum keeps the GIL: at several GB/s it takes
/// microseconds, less than handing the GIL back and waiting to take it again
/// (up to the 5 ms switch interval when other threads are busy).
const RELEASE_GIL_BYTES: usize = 1 << 20;

/// Bytes borrowed from a `bytes` object, or copied from any other buffer.
enum Data<'py> {
    Borrowed(Bound<'py, PyBytes>),
    Owned(Vec<u8>),
}

fn borrow<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Data<'py>> {
    if let Ok(bytes) = obj.downcast::<PyBytes>() {
        return Ok(Data::Borrowed(bytes.clone()));
    }
    let buffer = PyBuffer::<u8>::get(obj)?;
    Ok(Data::Owned(buffer.to_vec(obj.py())?))
}

impl Data<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Data::Borrowed(bytes) => bytes.as_bytes(),
            Data::Owned(vec) => vec,
        }
    }
}

/// `work` over the bytes of `data` (borrowed, see `borrow`), with the GIL released from
/// RELEASE_GIL_BYTES.
fn over_bytes<T: Send>(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    work: impl FnOnce(&[u8]) -> T + Send,
) -> PyResult<T> {
    let held = borrow(data)?;
    let slice = held.as_slice();
    if slice.len() < RELEASE_GIL_BYTES {
        return Ok(work(slice));
    }
    Ok(py.allow_threads(|| work(slice)))
}

/// crc32c(data, crc=0) -> int: the CRC-32C of a bytes-like object, continuing from `crc`.
#[pyfunction]
#[pyo3(name = "crc32c", signature = (data, crc = 0))]
fn crc32c_py(py: Python<'_>, data: &Bound<'_, PyAny>, crc: u32) -> PyResult<u32> {
    over_bytes(py, data, |slice| wal::crc32c(crc, slice))
}

/// record_crc(head, frames) -> int: the checksum of a WAL record body.
#[pyfunction]
fn record_crc(py: Python<'_>, head: &[u8], frames: Vec<Bound<'_, PyAny>>) -> PyResult<u32> {
    let held = frames.iter().map(borrow).collect::<PyResult<Vec<_>>>()?;
    let slices: Vec<&[u8]> = held.iter().map(Data::as_slice).collect();
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let result = if total < RELEASE_GIL_BYTES {
        wal::record_crc(head, slices.iter().copied())
    } else {
        py.allow_threads(|| wal::record_crc(head, slices.iter().copied()))
    };
    result
        .map_err(|len| PyOverflowError::new_err(format!("a frame of {len} bytes cannot be logged")))
}

/// encode_small_record(position, received_ns, frames, limit) -> (bytes, int) | None: one whole
/// WAL record and its checksum, built in one pass, for a message of at most `limit` bytes.
#[pyfunction]
fn encode_small_record<'py>(
    py: Python<'py>,
    position: u64,
    received_ns: i64,
    frames: Vec<Bound<'py, PyAny>>,
    limit: usize,
) -> PyResult<Option<(Bound<'py, PyBytes>, u32)>> {
    let held = frames.iter().map(borrow).collect::<PyResult<Vec<_>>>()?;
    let slices: Vec<&[u8]> = held.iter().map(Data::as_slice).collect();
    match wal::record_size(&slices) {
        Some(size) if size <= limit => {
            let mut crc = 0;
            let record = PyBytes::new_with(py, size, |out| {
                crc = wal::write_record(out, position, received_ns, &slices);
                Ok(())
            })?;
            Ok(Some((record, crc)))
        }
        _ => Ok(None),
    }
}

/// encode_small_records(position, messages, received_ns, start, limit) -> (bytes, [int]): the
/// messages from `start` on as whole WAL records numbered from `position`, laid end to end, and
/// their checksums; it stops before the first one whose record would be larger than `limit` (or
/// cannot be logged), so the list says how many it took (none: that message goes one at a time).
#[pyfunction]
fn encode_small_records<'py>(
    py: Python<'py>,
    position: u64,
    messages: &Bound<'py, PyList>,
    received_ns: &Bound<'py, PyList>,
    start: usize,
    limit: usize,
) -> PyResult<(Bound<'py, PyBytes>, Vec<u32>)> {
    let mut taken: Vec<(Vec<Data<'py>>, i64, usize)> = Vec::new();
    let mut total = 0usize;
    for index in start..messages.len().min(received_ns.len()) {
        let frames: Vec<Bound<'py, PyAny>> = messages.get_item(index)?.extract()?;
        let held = frames.iter().map(borrow).collect::<PyResult<Vec<_>>>()?;
        let slices: Vec<&[u8]> = held.iter().map(Data::as_slice).collect();
        let size = match wal::record_size(&slices) {
            Some(size) if size <= limit => size,
            _ => break,
        };
        let received: i64 = received_ns.get_item(index)?.extract()?;
        total += size;
        taken.push((held, received, size));
    }
    let mut crcs = Vec::with_capacity(taken.len());
    let records = PyBytes::new_with(py, total, |out| {
        let mut at = 0;
        for (next, (held, received, size)) in (position..).zip(&taken) {
            let slices: Vec<&[u8]> = held.iter().map(Data::as_slice).collect();
            crcs.push(wal::write_record(
                &mut out[at..at + size],
                next,
                *received,
                &slices,
            ));
            at += size;
        }
        Ok(())
    })?;
    Ok((records, crcs))
}

/// find_record(data, start, first, bound, budget) -> int | None: where reading resumes after damage.
#[pyfunction]
fn find_record(
    py: Python<'_>,
    data: &Bound<'_, PyBytes>,
    start: usize,
    first: u64,
    bound: u64,
    budget: usize,
) -> Option<usize> {
    let slice = data.as_bytes();
    if slice.len() < RELEASE_GIL_BYTES {
        return wal::find_record(slice, start, first, bound, budget);
    }
    py.allow_threads(|| wal::find_record(slice, start, first, bound, budget))
}

/// containers_within(payload, limit) -> int | None: the maps and arrays a msgpack value holds,
/// or None when it holds more than `limit` or is no single well-formed value.
#[pyfunction]
fn containers_within(
    py: Python<'_>,
    payload: &Bound<'_, PyAny>,
    limit: usize,
) -> PyResult<Option<usize>> {
    over_bytes(py, payload, |slice| decode::containers_within(slice, limit))
}

/// json_array_exceeds(payload, limit) -> bool: whether a JSON array has more than `limit`
/// top-level elements (at least `limit` commas at depth 1); one pass, nothing built.
#[pyfunction]
fn json_array_exceeds(py: Python<'_>, payload: &Bound<'_, PyAny>, limit: usize) -> PyResult<bool> {
    over_bytes(py, payload, |slice| json::array_exceeds(slice, limit))
}

fn int64_bytes<'py>(py: Python<'py>, values: &[i64]) -> PyResult<Bound<'py, PyBytes>> {
    le_bytes(py, values, i64::to_le_bytes)
}

fn uint32_bytes<'py>(py: Python<'py>, values: &[u32]) -> PyResult<Bound<'py, PyBytes>> {
    le_bytes(py, values, u32::to_le_bytes)
}

type Dictionary<'py> = (Bound<'py, PyList>, Bound<'py, PyBytes>);
type Columns<'py> = (
    Bound<'py, PyBytes>,
    Dictionary<'py>,
    Dictionary<'py>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
);

fn dictionary<'py>(py: Python<'py>, values: &[String], codes: &[u32]) -> PyResult<Dictionary<'py>> {
    Ok((PyList::new(py, values)?, uint32_bytes(py, codes)?))
}

/// One message's analytics records as columns, owned by Rust until a FlushColumns takes them.
#[pyclass(module = "pipelines._native", name = "MessageColumns", frozen)]
struct PyMessageColumns(MessageColumns);

#[pymethods]
impl PyMessageColumns {
    /// The columns of a msgpack payload of exactly `count` records, or None when the reference
    /// decoder must judge it; decoded with the GIL released from 1 MiB (see RELEASE_GIL_BYTES).
    #[staticmethod]
    fn decode(py: Python<'_>, payload: &Bound<'_, PyAny>, count: usize) -> PyResult<Option<Self>> {
        let decoded = over_bytes(py, payload, |slice| {
            decode::decode_analytics(slice, count).map(MessageColumns::from)
        })?;
        Ok(decoded.map(Self))
    }

    /// Columns of records decoded elsewhere (the reference decoder), all of one length.
    #[staticmethod]
    fn from_columns(
        timestamp_ns: Vec<i64>,
        org_id: Vec<String>,
        api_id: Vec<String>,
        response_code: Vec<i64>,
        latency_ms: Vec<i64>,
    ) -> PyResult<Self> {
        let n = timestamp_ns.len();
        if [
            org_id.len(),
            api_id.len(),
            response_code.len(),
            latency_ms.len(),
        ] != [n; 4]
        {
            return Err(PyValueError::new_err("columns of different lengths"));
        }
        Ok(Self(MessageColumns {
            timestamp_ns,
            org_id: OwnedDictionary::encode(org_id),
            api_id: OwnedDictionary::encode(api_id),
            response_code,
            latency_ms,
        }))
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    /// (timestamp_ns, org_id, api_id, response_code, latency_ms), as FlushColumns.columns.
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Columns<'py>> {
        let m = &self.0;
        Ok((
            int64_bytes(py, &m.timestamp_ns)?,
            dictionary(py, &m.org_id.values, &m.org_id.codes)?,
            dictionary(py, &m.api_id.values, &m.api_id.codes)?,
            int64_bytes(py, &m.response_code)?,
            int64_bytes(py, &m.latency_ms)?,
        ))
    }
}

/// (node, boot, seq, sent, count, columns) of a `tyk.analytics` message, read in one call.
/// The envelope fields of an analytics message the worker decodes natively:
/// (node, boot, seq, sent, count).
type EnvelopeFields = (String, i64, i64, i64, usize);

/// analytics_envelopes(messages, topic, max_message_bytes, max_records, max_node_bytes): for each
/// message (a sequence of frames), its envelope fields when it is a `topic` message of three frames
/// and at most `max_message_bytes` whose msgpack envelope the reference decoder accepts as it is
/// (decode::decode_envelope), else None: the caller decodes that one the reference way.
#[pyfunction]
fn analytics_envelopes(
    messages: Vec<Vec<Bound<'_, PyAny>>>,
    topic: &[u8],
    max_message_bytes: usize,
    max_records: usize,
    max_node_bytes: usize,
) -> PyResult<Vec<Option<EnvelopeFields>>> {
    let mut read = Vec::with_capacity(messages.len());
    for frames in &messages {
        let [first, envelope, payload] = frames.as_slice() else {
            read.push(None);
            continue;
        };
        let (first, envelope) = (borrow(first)?, borrow(envelope)?);
        let (first, envelope_bytes) = (first.as_slice(), envelope.as_slice());
        let size = first.len() + envelope_bytes.len() + payload.len()?;
        let fields = if first != topic || size > max_message_bytes {
            None
        } else {
            decode::decode_envelope(envelope_bytes, max_records, max_node_bytes)
                .map(|e| (e.node.to_owned(), e.boot, e.seq, e.sent, e.count))
        };
        read.push(fields);
    }
    Ok(read)
}

/// The analytics records of one flush, appended message by message.
#[pyclass(module = "pipelines._native", name = "FlushColumns")]
#[derive(Default)]
struct PyFlushColumns(FlushColumns);

#[pymethods]
impl PyFlushColumns {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    fn append(&mut self, message: &Bound<'_, PyMessageColumns>) {
        self.0.append(&message.get().0);
    }

    /// Msgpack analytics payloads, the n-th of counts[n] records, decoded and appended in order
    /// until one is declined (FlushColumns::append_payloads); how many were appended. The GIL is
    /// released when they add up to RELEASE_GIL_BYTES.
    fn append_payloads(
        &mut self,
        py: Python<'_>,
        payloads: Vec<Bound<'_, PyAny>>,
        counts: Vec<usize>,
    ) -> PyResult<usize> {
        if payloads.len() != counts.len() {
            return Err(PyValueError::new_err(
                "payloads and counts of different lengths",
            ));
        }
        let held = payloads.iter().map(borrow).collect::<PyResult<Vec<_>>>()?;
        let pairs: Vec<(&[u8], usize)> = held.iter().map(Data::as_slice).zip(counts).collect();
        let total: usize = pairs.iter().map(|(payload, _)| payload.len()).sum();
        let flush = &mut self.0;
        if total < RELEASE_GIL_BYTES {
            return Ok(flush.append_payloads(&pairs));
        }
        Ok(py.allow_threads(|| flush.append_payloads(&pairs)))
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    /// (timestamp_ns, org_id, api_id, response_code, latency_ms): int columns as little-endian
    /// int64 bytes, the ids as (distinct values, little-endian uint32 codes into them).
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Columns<'py>> {
        let f = &self.0;
        let (org_values, org_codes) = f.org_id();
        let (api_values, api_codes) = f.api_id();
        Ok((
            int64_bytes(py, &f.timestamp_ns)?,
            dictionary(py, org_values, org_codes)?,
            dictionary(py, api_values, api_codes)?,
            int64_bytes(py, &f.response_code)?,
            int64_bytes(py, &f.latency_ms)?,
        ))
    }
}

/// The values as little-endian bytes, written straight into the new `bytes` object (one pass,
/// which the compiler turns into plain stores; collecting a byte iterator was ~10x slower).
fn le_bytes<'py, T: Copy, const N: usize>(
    py: Python<'py>,
    values: &[T],
    to_le: fn(T) -> [u8; N],
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, values.len() * N, |out| {
        for (chunk, value) in out.chunks_exact_mut(N).zip(values) {
            chunk.copy_from_slice(&to_le(*value));
        }
        Ok(())
    })
}

type TrafficColumns<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    [Bound<'py, PyBytes>; 4],
    (
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
    ),
);

/// traffic_rows(window_start, org_codes, api_codes, response_code, latency_ms, thresholds):
/// the traffic rollup's partial rows of a flush, aggregated with the GIL released.
#[pyfunction]
fn traffic_rows<'py>(
    py: Python<'py>,
    window_start: PyBuffer<u32>,
    org_codes: PyBuffer<u32>,
    api_codes: PyBuffer<u32>,
    response_code: PyBuffer<i64>,
    latency_ms: PyBuffer<i64>,
    thresholds: PyBuffer<i64>,
) -> PyResult<TrafficColumns<'py>> {
    let window_start = window_start.to_vec(py)?;
    let org = org_codes.to_vec(py)?;
    let api = api_codes.to_vec(py)?;
    let response_code = response_code.to_vec(py)?;
    let latency_ms = latency_ms.to_vec(py)?;
    let thresholds = thresholds.to_vec(py)?;
    let rows = py.allow_threads(|| {
        let buckets = traffic::Buckets::new(&thresholds).ok_or("thresholds out of order")?;
        let records = traffic::Records {
            window_start: &window_start,
            org: &org,
            api: &api,
            response_code: &response_code,
            latency_ms: &latency_ms,
        };
        traffic::aggregate(records, &buckets).ok_or("columns of different lengths")
    });
    let rows = rows.map_err(PyValueError::new_err)?;
    Ok((
        le_bytes(py, &rows.window_start, u32::to_le_bytes)?,
        le_bytes(py, &rows.org, u32::to_le_bytes)?,
        le_bytes(py, &rows.api, u32::to_le_bytes)?,
        [
            le_bytes(py, &rows.requests, u64::to_le_bytes)?,
            le_bytes(py, &rows.status_4xx, u64::to_le_bytes)?,
            le_bytes(py, &rows.status_429, u64::to_le_bytes)?,
            le_bytes(py, &rows.status_5xx, u64::to_le_bytes)?,
        ],
        (
            le_bytes(py, &rows.offsets, i64::to_le_bytes)?,
            le_bytes(py, &rows.buckets, u16::to_le_bytes)?,
            le_bytes(py, &rows.counts, u64::to_le_bytes)?,
        ),
    ))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(crc32c_py, m)?)?;
    m.add_function(wrap_pyfunction!(record_crc, m)?)?;
    m.add_function(wrap_pyfunction!(encode_small_record, m)?)?;
    m.add_function(wrap_pyfunction!(encode_small_records, m)?)?;
    m.add_function(wrap_pyfunction!(find_record, m)?)?;
    m.add_function(wrap_pyfunction!(analytics_envelopes, m)?)?;
    m.add_function(wrap_pyfunction!(traffic_rows, m)?)?;
    m.add_function(wrap_pyfunction!(containers_within, m)?)?;
    m.add_function(wrap_pyfunction!(json_array_exceeds, m)?)?;
    m.add_class::<PyMessageColumns>()?;
    m.add_class::<PyFlushColumns>()?;
    Ok(())
}
