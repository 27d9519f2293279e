//! The one error type of the daemon's core. Front ends map it to their
//! own terms in one place each (D-Bus: `service.rs`).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (a login field, a pid).
    #[error("{0}")]
    InvalidArgs(String),
    /// A policy that does not parse or validate; nothing was changed.
    #[error("{0}")]
    InvalidPolicy(String),
    #[error("no session {0:?}")]
    NoSuchSession(String),
    /// A login refused on purpose (a session control, a lock): PAM denies
    /// it whatever its `fail=` says, and shows the user this message.
    #[error("{0}")]
    Refused(String),
    /// Anything else: the system refused (cgroups, maps, files).
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Failed(e)
    }
}
