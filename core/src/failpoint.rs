//! Crash points for tests: `STRATA_FAILPOINTS=after_hot_commit=1,after_claim=0.05`
//! makes the process abort (as a crash would, no cleanup) when it reaches
//! the named point, with the given probability; `name=sleep:3s` stalls the
//! calling thread there instead (to freeze a process at a known step). Read
//! once; unset in production, where each check is one load of an empty list.

use std::sync::OnceLock;
use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
enum Action {
    Abort(f64),
    Sleep(Duration),
}

fn configured() -> &'static [(String, Action)] {
    static FAILPOINTS: OnceLock<Vec<(String, Action)>> = OnceLock::new();
    FAILPOINTS.get_or_init(|| {
        std::env::var("STRATA_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| {
                let (name, value) = item.split_once('=')?;
                let value = value.trim();
                let action = match value.strip_prefix("sleep:") {
                    Some(text) => Action::Sleep(crate::duration::parse(text).ok()?),
                    None => Action::Abort(value.parse().ok()?),
                };
                Some((name.trim().to_string(), action))
            })
            .collect()
    })
}

/// Aborts the process (or stalls, see the module docs) if failpoint `name`
/// is armed and fires.
pub fn hit(name: &str) {
    for (point, action) in configured() {
        if point != name {
            continue;
        }
        match *action {
            Action::Abort(probability) => {
                if rand::thread_rng().gen_bool(probability.clamp(0.0, 1.0)) {
                    eprintln!("strata: failpoint {name} fired, aborting");
                    std::process::abort();
                }
            }
            Action::Sleep(pause) => {
                eprintln!("strata: failpoint {name} fired, sleeping {pause:?}");
                std::thread::sleep(pause);
            }
        }
    }
}

/// The pause of failpoint `name` when it is armed with `sleep:`, for async
/// code to await instead of stalling its runtime thread ([`hit`] sleeps the
/// thread, which in a tokio worker can also hold up tasks queued on it).
pub fn pause(name: &str) -> Option<Duration> {
    configured()
        .iter()
        .find_map(|(point, action)| match *action {
            Action::Sleep(pause) if point == name => {
                eprintln!("strata: failpoint {name} fired, pausing {pause:?}");
                Some(pause)
            }
            _ => None,
        })
}

/// True when failpoint `name` is armed with a probability and fires; for
/// points that inject a fault (a corrupted upload) instead of a crash.
pub fn fires(name: &str) -> bool {
    configured().iter().any(|(point, action)| {
        point == name
            && matches!(*action, Action::Abort(p) if rand::thread_rng().gen_bool(p.clamp(0.0, 1.0)))
    })
}
