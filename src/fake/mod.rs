//! Fake upstreams: real HTTP servers on loopback that speak an upstream's wire format (Gemini on
//! AI Studio and Vertex AI paths; Google's OAuth2 token endpoint for Vertex AI's service-account
//! tokens), used by the integration tests, the benchmarks and `nano-banana fake-gemini`. Never
//! used to serve real requests. Imports no other module of the crate; only tests and `main`
//! import it.

pub mod chat;
mod common;
pub mod gemini;
pub mod oauth;
pub mod openai;
