//! Failure points for crash tests. `EDDY_FAILPOINTS=name=n[,name=n...]` makes the process
//! abort — no cleanup, no flush, as `kill -9` would stop it — the n-th time it reaches the
//! point `name`. Without the variable (always, outside crash tests) a point costs one
//! check of an empty list.
//!
//! Points: `checkpoint:after_sink_append` (a query's output is in its sink topic but its
//! state and offsets are not committed), `checkpoint:after_commit` (committed, output not yet
//! published), `checkpoint:after_publish`, `checkpoint:in_roll_back` (a failed checkpoint's
//! output is cut from one partition of its sink, not yet from the others);
//! `checkpoint:fail_commit` and `checkpoint:roll_back_error`, where the n-th checkpoint commit
//! or roll-back fails with an error instead; `ddl:after_catalog` (a DROP or TERMINATE is
//! committed to the catalog, its topics, fences and state not yet changed); and `log:fsync`,
//! where the n-th fsync of a log partition fails with an I/O error instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static POINTS: OnceLock<Vec<(String, AtomicU64)>> = OnceLock::new();

fn points() -> &'static [(String, AtomicU64)] {
    POINTS.get_or_init(|| {
        let spec = std::env::var("EDDY_FAILPOINTS").unwrap_or_default();
        spec.split(',')
            .filter_map(|p| {
                let (name, n) = p.split_once('=')?;
                Some((name.trim().to_string(), AtomicU64::new(n.trim().parse().ok()?)))
            })
            .collect()
    })
}

/// Whether an injected failure is due: true once, at the n-th hit of an armed `name`
/// (for errors the caller must handle, like a failing fsync: `log:fsync`).
pub fn should_fail(name: &str) -> bool {
    points().iter().any(|(point, left)| point == name && left.fetch_sub(1, Ordering::SeqCst) == 1)
}

/// Aborts the process if `name` is armed and this is its n-th hit.
pub fn hit(name: &str) {
    for (point, left) in points() {
        if point == name && left.fetch_sub(1, Ordering::SeqCst) == 1 {
            eprintln!("eddy: failure point {name} reached: aborting");
            std::process::abort();
        }
    }
}
