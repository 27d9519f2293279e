//! The D-Bus face of the daemon: `org.restrictd.Daemon1` at
//! `/org/restrictd/Daemon1`. Each method checks that the caller is root
//! (the bus policy already should have refused anyone else) and runs the
//! daemon's work off the bus thread.

use std::sync::Arc;

use restrictd_dbus::{errors, OpenRequest, SessionInfo, Status};
use zbus::{
    fdo,
    message::{Header, Message},
    names::ErrorName,
    Connection,
};

use crate::daemon::{CallError, Core};

/// What a caller gets back. Written by hand rather than derived because
/// `AccessDenied` must carry the standard name
/// `org.freedesktop.DBus.Error.AccessDenied`, the others restrictd's own
/// (`restrictd_dbus::errors`).
#[derive(Debug)]
pub enum Error {
    AccessDenied(String),
    InvalidArgument(String),
    InvalidPolicy(String),
    NoSuchSession(String),
    Failed(String),
}

impl zbus::DBusError for Error {
    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(match self {
            Error::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
            Error::InvalidArgument(_) => "org.freedesktop.DBus.Error.InvalidArgs",
            Error::InvalidPolicy(_) => errors::INVALID_POLICY,
            Error::NoSuchSession(_) => errors::NO_SUCH_SESSION,
            Error::Failed(_) => errors::FAILED,
        })
    }

    fn description(&self) -> Option<&str> {
        match self {
            Error::AccessDenied(m)
            | Error::InvalidArgument(m)
            | Error::InvalidPolicy(m)
            | Error::NoSuchSession(m)
            | Error::Failed(m) => Some(m),
        }
    }

    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name()).build(&(self.description().unwrap_or_default(),))
    }
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Self {
        Error::Failed(e.to_string())
    }
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        match e {
            CallError::AccessDenied(m) => Error::AccessDenied(m),
            CallError::InvalidArgs(m) => Error::InvalidArgument(m),
            CallError::InvalidPolicy(m) => Error::InvalidPolicy(m),
            e @ CallError::NoSuchSession(_) => Error::NoSuchSession(e.to_string()),
            e @ CallError::Failed(_) => Error::Failed(e.to_string()),
        }
    }
}

pub struct Service {
    core: Arc<Core>,
}

impl Service {
    pub fn new(core: Arc<Core>) -> Service {
        Service { core }
    }
}

/// The caller's uid and pid, as the bus daemon vouches for them.
async fn caller(hdr: &Header<'_>, conn: &Connection) -> Result<(u32, u32), Error> {
    let sender = hdr
        .sender()
        .ok_or_else(|| Error::from(CallError::AccessDenied("caller has no bus name".into())))?;
    let creds = fdo::DBusProxy::new(conn)
        .await?
        .get_connection_credentials(sender.clone().into())
        .await
        .map_err(|e| Error::Failed(format!("asking the bus who called: {e}")))?;
    match (creds.unix_user_id(), creds.process_id()) {
        (Some(uid), Some(pid)) => Ok((uid, pid)),
        _ => Err(CallError::AccessDenied(
            "the bus does not vouch for the caller's uid and pid".into(),
        )
        .into()),
    }
}

async fn require_root(hdr: &Header<'_>, conn: &Connection) -> Result<u32, Error> {
    let (uid, pid) = caller(hdr, conn).await?;
    if uid != 0 {
        return Err(CallError::AccessDenied(format!(
            "only root may use {} (caller uid {uid})",
            restrictd_dbus::INTERFACE
        ))
        .into());
    }
    Ok(pid)
}

/// Runs blocking daemon work (cgroup and map syscalls) off the bus thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CallError> + Send + 'static,
) -> Result<T, Error> {
    zruntime::unblock(f).await.map_err(Error::from)
}

#[zbus::interface(name = "org.restrictd.Daemon1")]
impl Service {
    async fn open_session(
        &self,
        request: OpenRequest,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let pid = require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || core.open_session(pid, &request)).await
    }

    async fn close_session(
        &self,
        sid: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || core.close_session(&sid)).await
    }

    async fn list_sessions(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<SessionInfo>, Error> {
        require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || Ok(core.list_sessions())).await
    }

    async fn terminate_session(
        &self,
        sid: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || core.terminate_session(&sid)).await
    }

    async fn get_policy(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(String, String), Error> {
        require_root(&hdr, conn).await?;
        Ok(self.core.policy())
    }

    async fn apply_policy(
        &self,
        yaml: String,
        source: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || core.apply_policy(&yaml, &source)).await
    }

    async fn status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Status, Error> {
        require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || Ok(core.status())).await
    }
}
