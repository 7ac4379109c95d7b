//! What nano-banana's integration tests (`tests/api`) and its benchmark tool
//! (`src/bin/nano-banana-bench`) both need to drive the server from outside: one callback
//! receiver ([`receiver`]) and one child-process launcher ([`process`]); and for the fault tests
//! alone, dependencies that fail on demand ([`faults`]). Each used to have its
//! own copy of both; they now share these, with the behaviour each had. The tests also note
//! what they leave in the shared services ([`leftovers`]) for the end of the run to remove.
//!
//! What this crate does not own: anything of the server itself (it does not depend on the
//! `nano-banana` crate, and the server's library never imports it), the commands that start
//! `nano-banana serve` or `fake-gemini` (the tests and the benchmark each pass their own flags),
//! the test suite's assertions, and the benchmark's load, scenarios and report.
//!
//! Helpers here may panic where only a test calls them ([`process::free_port`],
//! [`receiver::CallbackReceiver::wait_for`]); what the benchmark calls returns errors instead.

pub mod faults;
pub mod leftovers;
pub mod process;
pub mod receiver;

pub use faults::{FaultProxy, HTTP_503, ProxyMode, Stall, StallingReceiver};
pub use process::{ChildProcess, Usage, free_port};
pub use receiver::{Behaviour, CallbackReceiver, Deliveries};
