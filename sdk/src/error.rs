//! The error every host call and template entry point returns.

/// Why a host call (or a template) did not do what was asked. Mirrors the WIT `error` variant,
/// so a template can tell a refusal it may work around from a real failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The template's declaration or the operator's grant (or the container's network rules)
    /// does not allow the call: what was refused, as data, and how to allow it.
    PermissionDenied(Denied),
    /// Malformed input: a bad URL, a missing parameter, an event that is not what was expected.
    Invalid(String),
    /// The operation ran out of time.
    Timeout,
    /// The operation was attempted and failed.
    Failed(String),
    /// Not a failure: a tag's `fire` decided there is nothing to send for this event (no
    /// identifier, no value, filtered out). Return it from `fire` — `Err(Error::skipped(..))`,
    /// or `?` on an `ok_or_else` — and the host records `skipped: <reason>` in the log line
    /// and the trace instead of `ok`. Host calls never return it.
    Skipped(String),
}

/// A refused call (the WIT `denial`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The permission it needs, as the manifest and the grant spell it (`request_headers`,
    /// `cookies`, `event_data`, `outbound`, ...), or `network` when the container's
    /// `[outbound]` rules refused the address.
    pub permission: String,
    /// What was refused under it: a header, cookie or event key, a URL's origin; empty for a
    /// yes/no permission.
    pub name: String,
    /// The explanation with the fix, masked.
    pub message: String,
}

impl Denied {
    /// A refusal of `name` under `permission`, explained by `message`.
    pub fn new(permission: impl Into<String>, name: impl Into<String>, message: impl Into<String>) -> Self {
        Denied { permission: permission.into(), name: name.into(), message: message.into() }
    }
}

impl Error {
    /// An [`Error::Invalid`] with this message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// An [`Error::Failed`] with this message.
    pub fn failed(msg: impl Into<String>) -> Self {
        Error::Failed(msg.into())
    }

    /// An [`Error::Skipped`]: the tag has nothing to send for this event, for this reason.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Error::Skipped(reason.into())
    }

    /// What a skip means where only a tag's `fire` may skip (a client's `run`, a `deliver`):
    /// the template's own failure. The host and the mock host both apply it.
    pub(crate) fn skip_as_failure(self) -> Self {
        match self {
            Error::Skipped(m) => Error::Failed(format!("skipped outside a tag's fire: {m}")),
            other => other,
        }
    }

    /// Whether this is a permission refusal.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::PermissionDenied(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::PermissionDenied(d) => write!(f, "permission denied: {}", d.message),
            Error::Invalid(m) => write!(f, "invalid: {m}"),
            Error::Timeout => f.write_str("timed out"),
            Error::Failed(m) => write!(f, "failed: {m}"),
            Error::Skipped(m) => write!(f, "skipped: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Invalid(format!("JSON: {e}"))
    }
}

/// For a read a template can do without: a permission refusal becomes "not there".
pub trait UnlessDenied<T> {
    /// `Ok(None)` when the host refused the call for a permission (the refusal is still
    /// recorded in the trace); any other error stays an error.
    fn unless_denied(self) -> Result<Option<T>, Error>;
}

impl<T> UnlessDenied<T> for Result<Option<T>, Error> {
    fn unless_denied(self) -> Result<Option<T>, Error> {
        match self {
            Err(e) if e.is_permission_denied() => Ok(None),
            other => other,
        }
    }
}
