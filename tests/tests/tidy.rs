//! Tidy checks over the workspace's sources, no database needed: library
//! code never decodes a column with the panicking `Row::get` of
//! tokio-postgres or sqlx. The sources are found from this crate's
//! directory (`CARGO_MANIFEST_DIR/..`, the workspace root).

use std::path::{Path, PathBuf};

/// The sources of the workspace's library crates, from its root.
const LIBRARY_SOURCES: [&str; 10] = [
    "core/src",
    "pg/src",
    "relay/src",
    "archive/src",
    "archiver/src",
    "api/src",
    "producer/src",
    "migrations/src",
    "embedded/src",
    "workbench/src",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Whether `line` calls the `Row::get` of tokio-postgres or sqlx, which
/// panics when a value does not decode: a `get` call on a variable
/// named like a row (`r`, `row`, `row_*`, `*_row`), a `get` with a
/// turbofish, a path call `Row::get(..)`, or a `get` with an integer
/// index on an expression (`.await?` then `get(0)`, a chain line that
/// starts with it). Method calls on maps, slices and headers have
/// other receivers or arguments; comment lines are skipped. The
/// patterns are built with `concat!` so that this file would pass the
/// scan too (it is not among the sources scanned).
fn calls_row_get(line: &str) -> bool {
    let code = line.trim_start();
    if code.starts_with("//") {
        return false;
    }
    if code.contains(concat!("Row::", "get(")) {
        return true;
    }
    let method = concat!(".", "get");
    let mut from = 0;
    while let Some(found) = code[from..].find(method) {
        let at = from + found;
        from = at + method.len();
        let rest = &code[from..];
        if rest.starts_with("::<") {
            return true;
        }
        // `get_mut`, `get_or_insert_with`, ... are other methods.
        let Some(args) = rest.strip_prefix('(') else {
            continue;
        };
        let before = &code[..at];
        let ident_start = before
            .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_')
            .len();
        let receiver = &before[ident_start..];
        let row_receiver = receiver == "r"
            || receiver == "row"
            || receiver.starts_with("row_")
            || receiver.ends_with("_row");
        let index = args.split(')').next().unwrap_or("");
        let integer_index = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
        if row_receiver || (receiver.is_empty() && integer_index) {
            return true;
        }
    }
    false
}

#[test]
fn the_check_tells_row_gets_from_other_gets() {
    for line in [
        concat!("let x: i64 = row.", "get(0);"),
        concat!("(r.", "get(0), r.", "get(1))"),
        concat!("    .await?.", "get(0);"),
        concat!("        .", "get(0);"),
        concat!("        .", "get(10)"),
        concat!("bytes: row.", "get::<_, i64>(8).max(0) as u64,"),
        concat!("let n: i64 = rec.", "get::<i64, _>(\"n\");"),
        concat!("let name: &str = first_row.", "get(\"name\");"),
        concat!(".map(|r| Row::", "get(r, 0))"),
    ] {
        assert!(calls_row_get(line), "not caught: {line}");
    }
    for line in [
        concat!("let mut client = pool.", "get().await?;"),
        concat!("Some(kid) => self.keys.", "get(kid).into_iter().collect(),"),
        concat!("            .", "get(page + 1)"),
        concat!("            .", "get(\"authorization\")"),
        concat!("        .", "get()"),
        concat!("let epoch: i64 = row.try_", "get(0)?;"),
        concat!("if let Some(byte) = bytes.", "get_mut(middle) {"),
        concat!("let first = parts.", "get(0);"),
        concat!("/// Unlike row.", "get(0), this does not panic."),
    ] {
        assert!(!calls_row_get(line), "wrongly caught: {line}");
    }
}

/// `Row::get` panics on a value that does not decode (a NULL into a
/// non-`Option`, a `timestamptz` of `infinity` into a `DateTime`, ...);
/// library code uses `try_get` and a typed error instead.
#[test]
fn library_code_never_decodes_with_the_panicking_row_get() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in LIBRARY_SOURCES {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() >= LIBRARY_SOURCES.len(),
        "found only {} source files under {}",
        files.len(),
        root.display()
    );
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        for (number, line) in text.lines().enumerate() {
            if calls_row_get(line) {
                let shown = file.strip_prefix(&root).unwrap_or(file.as_path());
                offenders.push(format!(
                    "{}:{}: {}",
                    shown.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "Row::get panics on a value that does not decode; use try_get and map the error \
         into the crate's error type (rename the variable if this is not a database row):\n{}",
        offenders.join("\n")
    );
}

/// Every metric name registered in the sources (the first string literal
/// of a `register_*!` call) with the macro used: `(name, macro)`.
fn registered_metrics() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in LIBRARY_SOURCES.iter().chain(["cli/src"].iter()) {
        rust_files(&root.join(dir), &mut files);
    }
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("register_") {
            rest = &rest[at..];
            let macro_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name_of_macro = rest[..macro_end].to_string();
            rest = &rest[macro_end..];
            if !rest.starts_with("!(") {
                continue;
            }
            let Some(open) = rest.find('"') else { break };
            let literal = &rest[open + 1..];
            let Some(close) = literal.find('"') else {
                break;
            };
            found.push((literal[..close].to_string(), name_of_macro));
            rest = &literal[close..];
        }
    }
    found
}

/// Metric names follow Prometheus's conventions: `strata_` prefix, snake
/// case; counters end in `_total` with the unit right before it
/// (`_bytes_total`, `_seconds_total`), other kinds never end in `_total`;
/// a unit word (`seconds`, `bytes`) only as the last word (before
/// `_total`); no reserved suffix (`_count`, `_sum`, `_bucket`).
#[test]
fn metric_names_follow_prometheus_conventions() {
    let metrics = registered_metrics();
    assert!(metrics.len() >= 30, "found only {metrics:?}");
    let mut problems = Vec::new();
    for (name, kind) in &metrics {
        let counter = kind.contains("counter");
        let words: Vec<&str> = name.split('_').collect();
        if !name.starts_with("strata_")
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            problems.push(format!("{name}: not strata_ snake case"));
        }
        if counter != name.ends_with("_total") {
            problems.push(format!("{name} ({kind}): _total iff a counter"));
        }
        let base: &[&str] = if counter {
            &words[..words.len() - 1]
        } else {
            &words
        };
        for unit in ["seconds", "bytes"] {
            if let Some(at) = base.iter().position(|w| *w == unit) {
                if at + 1 != base.len() {
                    problems.push(format!(
                        "{name}: unit {unit} must come last (before _total)"
                    ));
                }
            }
        }
        for reserved in ["_count", "_sum", "_bucket"] {
            if name.ends_with(reserved) {
                problems.push(format!("{name}: reserved suffix {reserved}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
