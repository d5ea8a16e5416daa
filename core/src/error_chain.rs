//! An error and its causes as one line, the way the binary prints them.

/// `err` and its sources joined with ": ", the text anyhow's `{err:#}`
/// prints. Libraries have no anyhow; their tests use this to check that a
/// cause is printed once, either in a message or as a source, never both.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
