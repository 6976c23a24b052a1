//! The netstage comparison harness: scenario sweeps over designs, sizes, directions and
//! queues, TCP bulk experiments, results as CSV/JSON, tables and plots.
//!
//! Status: not implemented yet; it needs the platform and the two protocol ends. The crate
//! exports nothing.
