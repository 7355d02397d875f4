//! Host programs dvm runs outside the sandbox (pip through Python, npm): which one, and how
//! their output is shown in errors.

/// The Python that runs pip unless [`crate::Config::python`] names another.
pub(crate) const DEFAULT_PYTHON: &str = "python3";

/// The last `lines` lines of a program's output, for an error message.
pub(crate) fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
