//! Fake upstreams: real HTTP servers on loopback that speak an upstream's wire format, used by
//! the integration tests, the benchmarks and `nano-banana fake-gemini`. Never used to serve
//! real requests. Imports no other module of the crate; only tests and `main` import it.

pub mod gemini;
