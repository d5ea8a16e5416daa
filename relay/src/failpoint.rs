//! Crash points for tests: `STRATA_FAILPOINTS=after_hot_commit=1,after_claim=0.05`
//! makes the process abort (as a crash would, no cleanup) when it reaches
//! the named point, with the given probability. Read once; unset in
//! production, where each check is one load of an empty list.

use std::sync::OnceLock;

use rand::Rng;

/// Points the relay checks.
pub const POINTS: [&str; 4] = [
    "after_claim",
    "before_hot_commit",
    "after_hot_commit",
    "before_source_release",
];

fn configured() -> &'static [(String, f64)] {
    static FAILPOINTS: OnceLock<Vec<(String, f64)>> = OnceLock::new();
    FAILPOINTS.get_or_init(|| {
        std::env::var("STRATA_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| {
                let (name, p) = item.split_once('=')?;
                Some((name.trim().to_string(), p.trim().parse().ok()?))
            })
            .collect()
    })
}

/// Aborts the process if failpoint `name` is armed and fires.
pub fn hit(name: &str) {
    for (point, probability) in configured() {
        if point == name && rand::thread_rng().gen_bool(probability.clamp(0.0, 1.0)) {
            eprintln!("strata: failpoint {name} fired, aborting");
            std::process::abort();
        }
    }
}
