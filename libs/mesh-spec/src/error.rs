use std::fmt;

/// A spec rejected at a field: `path` is the field as the user wrote it
/// (`spec.tools[1].spec.config.endpoint`), `message` says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error under a parent field (`spec` + `tools[0]`).
    pub fn under(mut self, parent: &str) -> Self {
        self.path = join(parent, &self.path);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// `parent.child`, or `parent[0]` when the child is an index.
pub(crate) fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (_, true) => parent.to_owned(),
        _ if child.starts_with('[') => format!("{parent}{child}"),
        _ => format!("{parent}.{child}"),
    }
}

/// A serde error of a typed document, as a field error under `parent`.
pub(crate) fn from_serde<E: fmt::Display>(
    parent: &str,
    error: serde_path_to_error::Error<E>,
) -> FieldError {
    let path = error.path().to_string();
    let path = if path == "." { String::new() } else { path };
    FieldError::new(join(parent, &path), error.into_inner().to_string())
}
