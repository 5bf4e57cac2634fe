//! The Python module `pipelines._native`: argument conversion only; the work is in
//! the plain-Rust modules. Large inputs are checksummed with the GIL released.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::decode::{self, AnalyticsColumns};
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

/// crc32c(data, crc=0) -> int: the CRC-32C of a bytes-like object, continuing from `crc`.
#[pyfunction]
#[pyo3(name = "crc32c", signature = (data, crc = 0))]
fn crc32c_py(py: Python<'_>, data: &Bound<'_, PyAny>, crc: u32) -> PyResult<u32> {
    let held = borrow(data)?;
    let slice = held.as_slice();
    if slice.len() < RELEASE_GIL_BYTES {
        return Ok(wal::crc32c(crc, slice));
    }
    Ok(py.allow_threads(|| wal::crc32c(crc, slice)))
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

fn int64_bytes<'py>(py: Python<'py>, values: &[i64]) -> Bound<'py, PyBytes> {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    PyBytes::new(py, &raw)
}

fn uint32_bytes<'py>(py: Python<'py>, values: &[u32]) -> Bound<'py, PyBytes> {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    PyBytes::new(py, &raw)
}

type Dictionary<'py> = (Bound<'py, PyList>, Bound<'py, PyBytes>);
type Columns<'py> = (
    Bound<'py, PyBytes>,
    Dictionary<'py>,
    Dictionary<'py>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
);

/// decode_analytics(payload, count) -> (timestamp_ns, org_id, api_id, response_code, latency_ms) | None
///
/// Columns of a msgpack `tyk.analytics` payload (int columns as little-endian int64 bytes, the two
/// ids as (distinct values, little-endian uint32 codes)), decoded
/// with the GIL released from 1 MiB (see RELEASE_GIL_BYTES); None when the reference decoder must
/// judge the payload.
#[pyfunction]
fn decode_analytics<'py>(
    py: Python<'py>,
    payload: &[u8],
    count: usize,
) -> PyResult<Option<Columns<'py>>> {
    let columns = if payload.len() < RELEASE_GIL_BYTES {
        decode::decode_analytics(payload, count)
    } else {
        py.allow_threads(|| decode::decode_analytics(payload, count))
    };
    let Some(columns) = columns else {
        return Ok(None);
    };
    let AnalyticsColumns {
        timestamp_ns,
        org_id,
        api_id,
        response_code,
        latency_ms,
    } = columns;
    Ok(Some((
        int64_bytes(py, &timestamp_ns),
        (
            PyList::new(py, org_id.values)?,
            uint32_bytes(py, &org_id.codes),
        ),
        (
            PyList::new(py, api_id.values)?,
            uint32_bytes(py, &api_id.codes),
        ),
        int64_bytes(py, &response_code),
        int64_bytes(py, &latency_ms),
    )))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(crc32c_py, m)?)?;
    m.add_function(wrap_pyfunction!(record_crc, m)?)?;
    m.add_function(wrap_pyfunction!(decode_analytics, m)?)?;
    Ok(())
}
