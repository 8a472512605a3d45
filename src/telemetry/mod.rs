//! What the platform records about traffic: redaction before anything is stored or logged.

pub mod metrics;
pub mod redact;
pub mod retention;
pub mod rollup;
pub mod writer;
