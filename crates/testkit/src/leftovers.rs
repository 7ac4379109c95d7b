//! What a test leaves in the shared services — a PostgreSQL schema, a Redis key prefix — noted
//! in the file `NANO_BANANA_TEST_LEFTOVERS` names (one `KIND NAME` line each), so that
//! `scripts/test.sh` removes exactly those at the end of its run, and nothing of a run beside it.
//! Without the variable (a test run by hand) nothing is noted and nothing removed.

use std::io::Write as _;

/// Notes `name` (a schema, or a key prefix) of `kind` (`schema`, `redis-prefix`).
pub fn record(kind: &str, name: &str) {
    let Some(path) = std::env::var_os("NANO_BANANA_TEST_LEFTOVERS") else {
        return;
    };
    // One short line per append: appends of it from parallel processes do not interleave.
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(format!("{kind} {name}\n").as_bytes());
    }
}
