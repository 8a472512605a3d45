//! What the platform records about traffic and itself: redaction before anything is stored or
//! logged, the request log, metrics and the platform's own log.

pub mod logging;
pub mod metrics;
pub mod redact;
pub mod retention;
pub mod rollup;
pub mod writer;
