//! What an SRE sees of a segstream process: Prometheus metrics (one typed
//! [`Metrics`] registry, passed explicitly, never global), the HTTP endpoints
//! `/metrics`, `/healthz` and `/readyz`, and logging through `tracing`.

mod http;
mod logging;
mod metrics;

pub use http::{Health, HttpError, operations_routes, serve};
pub use logging::init_logging;
pub use metrics::Metrics;
