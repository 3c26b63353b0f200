//! An error as one line of text for logs and stored errors.

/// The error and each of its causes, joined by `": "` (a connection error's Display says only
/// "error connecting"; the refusal or timeout is in its sources).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
