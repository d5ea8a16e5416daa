//! The name a process gives itself where it competes with others through
//! the database: the archiver's lease (`strata.archiver_lease.holder`) and
//! the relay's reconciler election rows (`strata.reconciler_terms`,
//! `strata.reconciler_status`).

/// A holder id for a candidate in this process: `host:suffix:pid`, where
/// `host` is the kernel's hostname (`/proc/sys/kernel/hostname`, which
/// `$HOSTNAME` often is not exported to reflect; then `$HOSTNAME`; then
/// `localhost`), `suffix` 8 random hex digits, and `pid` this process's id.
///
/// The random suffix is what makes the id unique: the archiver's lease
/// treats an equal holder as "already ours" and takes it over at once,
/// so two archivers with the same host and pid (pid 1 in containers with
/// one hostname) must still differ, and so must a restarted process from
/// its predecessor, whose lease it must wait out. Each call draws a new
/// suffix: call it once per candidate and keep the value (a candidate
/// re-acquiring its own lease after a reconnect relies on that).
///
/// Fields are separated by `:` (a hostname cannot contain one) and the pid
/// is last, so `holder.rsplit(':').next()` is the process id: the
/// end-to-end tests find the elected reconciler's process that way.
pub fn holder_id() -> String {
    let host = choose_hostname(
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::env::var("HOSTNAME").ok(),
    );
    format_holder(&host, rand::random::<u32>(), std::process::id())
}

/// The first non-blank hostname of the kernel's and the environment's,
/// else `localhost`.
fn choose_hostname(kernel: Option<String>, environment: Option<String>) -> String {
    [kernel, environment]
        .into_iter()
        .flatten()
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn format_holder(host: &str, suffix: u32, pid: u32) -> String {
    format!("{host}:{suffix:08x}:{pid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_is_the_last_field() {
        let holder = format_holder("relay-7", 0xab, 4711);
        assert_eq!(holder, "relay-7:000000ab:4711");
        assert_eq!(holder.rsplit(':').next(), Some("4711"));
        let own = holder_id();
        assert_eq!(
            own.rsplit(':').next(),
            Some(std::process::id().to_string().as_str())
        );
    }

    #[test]
    fn the_hostname_falls_back_to_the_environment_then_localhost() {
        let name = |s: &str| Some(s.to_string());
        assert_eq!(choose_hostname(name("web-1\n"), name("env")), "web-1");
        assert_eq!(choose_hostname(None, name("env")), "env");
        assert_eq!(choose_hostname(name(" \n"), name("env")), "env");
        assert_eq!(choose_hostname(None, None), "localhost");
        assert_eq!(choose_hostname(name(""), name("")), "localhost");
    }

    #[test]
    fn two_candidates_in_one_process_differ() {
        // 2^-32 chance of a false failure.
        assert_ne!(holder_id(), holder_id());
    }
}
