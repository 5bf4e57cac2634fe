//! tykpulse's native core.
//!
//! The modules below are plain Rust (tested by `cargo test` without Python);
//! `python` (the `python` feature, built by maturin) is the thin PyO3 layer that
//! exposes them as `pipelines._native`.

pub mod decode;
pub mod flush;
pub mod json;
pub mod traffic;
pub mod wal;

#[cfg(feature = "python")]
mod python;
