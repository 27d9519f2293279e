//! The D-Bus front end of the daemon: `org.restrictd.Daemon1` at
//! `/org/restrictd/Daemon1`. Each method checks that the caller is root
//! (the bus policy already should have refused anyone else), runs the
//! core's work off the bus thread, and maps the core's types and its one
//! error type to the bus's (here, and nowhere else).

use std::{path::Path, sync::Arc};

use anyhow::{anyhow, Context, Result};
use restrictd_dbus::{errors, LockInfo, OpenRequest, SessionInfo, Status};
use zbus::{
    fdo,
    message::{Header, Message},
    names::ErrorName,
    Connection,
};

use crate::{
    config::Config,
    daemon::{Core, Login},
    error::Error as CoreError,
    session::{Session, SshConnection},
};

/// What a caller gets back. Written by hand rather than derived because
/// `AccessDenied` and `InvalidArgs` must carry the standard names
/// `org.freedesktop.DBus.Error.*`, the others restrictd's own
/// (`restrictd_dbus::errors`).
#[derive(Debug)]
pub enum Error {
    AccessDenied(String),
    Core(CoreError),
    Bus(String),
}

impl Error {
    fn message(&self) -> String {
        match self {
            Error::AccessDenied(m) | Error::Bus(m) => m.clone(),
            Error::Core(e) => e.to_string(),
        }
    }
}

impl zbus::DBusError for Error {
    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(match self {
            Error::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
            Error::Core(CoreError::InvalidArgs(_)) => "org.freedesktop.DBus.Error.InvalidArgs",
            Error::Core(CoreError::InvalidPolicy(_)) => errors::INVALID_POLICY,
            Error::Core(CoreError::NoSuchSession(_)) => errors::NO_SUCH_SESSION,
            Error::Core(CoreError::Refused(_)) => errors::REFUSED,
            Error::Core(CoreError::Failed(_)) | Error::Bus(_) => errors::FAILED,
        })
    }

    fn description(&self) -> Option<&str> {
        None
    }

    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name()).build(&(self.message(),))
    }
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Self {
        Error::Bus(e.to_string())
    }
}

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Self {
        Error::Core(e)
    }
}

fn session_info(s: Session) -> SessionInfo {
    SessionInfo {
        sid: s.sid.to_string(),
        user: s.user.clone().unwrap_or_default(),
        login: s.login.clone().unwrap_or_default(),
        uid: s.uid.unwrap_or(u32::MAX),
        leader_pid: s.leader_pid,
        remote_host: s.remote_host.clone(),
        service: s.service.clone(),
        tty: s.tty.clone(),
        processes: s.cgroup.pids().map(|p| p.len() as u32).unwrap_or(0),
        started: s.started,
        cgroup: s.cgroup.path.display().to_string(),
        cgroup_id: s.cgroup.id,
        state: if s.closed { "closed" } else { "open" }.into(),
        lost_network: s.lost.lost_network,
        lost_command: s.lost.lost_command,
        lost_disk: s.lost.lost_disk,
        disk_events_dropped: s.lost.disk_events_dropped,
        command_events_dropped: s.lost.command_events_dropped,
        network_events_dropped: s.lost.network_events_dropped,
        unwritten: s.lost.unwritten,
        policy: s.policy.unwrap_or_default(),
    }
}

fn status(core: &Core) -> Status {
    use restrictd_common::{EVENT_COMMAND, EVENT_DISK, EVENT_NETWORK};
    let st = core.status();
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        kernel_state: st.kernel_state,
        sessions: st.sessions as u32,
        policy: st.policy,
        system_log: st.system_log.into(),
        lost_network: st.lost.kind(EVENT_NETWORK),
        lost_command: st.lost.kind(EVENT_COMMAND),
        lost_disk: st.lost.kind(EVENT_DISK),
    }
}

/// `restrictd serve`: the core, served on the system bus until a signal
/// stops it.
pub fn serve(config: Config, events: Option<&Path>) -> Result<()> {
    let core = Core::start(config, events)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        // zbus runs the connection on its own runtime; awaiting it here is fine.
        let _conn = zbus::connection::Builder::system()
            .name(restrictd_dbus::BUS_NAME)
            .serve_at(restrictd_dbus::OBJECT_PATH, Service { core: core.clone() })
            .build()
            .await
            .map_err(|e| {
                anyhow!(
                    "connecting to the D-Bus system bus as {}: {e} (is another restrictd running?)",
                    restrictd_dbus::BUS_NAME
                )
            })?;
        log::info!(
            "restrictd {} serving {} on the system bus; system log: {}",
            env!("CARGO_PKG_VERSION"),
            restrictd_dbus::BUS_NAME,
            core.system_log_name()
        );
        core.run().await
    })
}

pub struct Service {
    core: Arc<Core>,
}

/// The caller's uid and pid, as the bus daemon vouches for them.
async fn caller(hdr: &Header<'_>, conn: &Connection) -> Result<(u32, u32), Error> {
    let sender = hdr
        .sender()
        .ok_or_else(|| Error::AccessDenied("caller has no bus name".into()))?;
    let creds = fdo::DBusProxy::new(conn)
        .await?
        .get_connection_credentials(sender.clone().into())
        .await
        .map_err(|e| Error::Bus(format!("asking the bus who called: {e}")))?;
    match (creds.unix_user_id(), creds.process_id()) {
        (Some(uid), Some(pid)) => Ok((uid, pid)),
        _ => Err(Error::AccessDenied(
            "the bus does not vouch for the caller's uid and pid".into(),
        )),
    }
}

async fn require_root(hdr: &Header<'_>, conn: &Connection) -> Result<u32, Error> {
    let (uid, pid) = caller(hdr, conn).await?;
    if uid != 0 {
        return Err(Error::AccessDenied(format!(
            "only root may use {} (caller uid {uid})",
            restrictd_dbus::INTERFACE
        )));
    }
    Ok(pid)
}

/// Runs blocking daemon work (cgroup and map syscalls) off the bus thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
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
        self.open_session_env(request, Default::default(), hdr, conn)
            .await
    }

    async fn open_session_env(
        &self,
        request: OpenRequest,
        env: std::collections::HashMap<String, String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let pid = require_root(&hdr, conn).await?;
        let core = self.core.clone();
        // Only describes the login: a malformed value (another PAM module
        // may set the variable) is logged, and the login goes on.
        let ssh = env
            .get("SSH_CONNECTION")
            .and_then(|v| match SshConnection::parse(v) {
                Ok(c) => Some(c),
                Err(e) => {
                    log::warn!("OpenSessionEnv from pid {pid}: SSH_CONNECTION ignored: {e}");
                    None
                }
            });
        let login = Login {
            login: request.login,
            uid: request.uid,
            remote_host: request.remote_host,
            service: request.service,
            tty: request.tty,
            ssh,
            auth_info: env.get("SSH_AUTH_INFO_0").cloned(),
        };
        blocking(move || core.open_session(pid, &login)).await
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
        blocking(move || Ok(core.sessions().into_iter().map(session_info).collect())).await
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

    async fn explain_policy(
        &self,
        login: std::collections::HashMap<String, String>,
        dest: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || core.explain_login(&login, &dest)).await
    }

    async fn lock(
        &self,
        target: String,
        name: String,
        ttl_secs: u64,
        reason: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let pid = require_root(&hdr, conn).await?;
        let core = self.core.clone();
        let ttl = (ttl_secs > 0).then(|| std::time::Duration::from_secs(ttl_secs));
        blocking(move || core.lock(&target, &name, ttl, &reason, pid)).await
    }

    async fn unlock(
        &self,
        target: String,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        let pid = require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || core.unlock(&target, &name, pid)).await
    }

    async fn list_locks(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<LockInfo>, Error> {
        require_root(&hdr, conn).await?;
        Ok(self
            .core
            .locks()
            .into_iter()
            .map(|l| LockInfo {
                target: l.target.as_str().into(),
                name: l.name,
                reason: l.reason,
                created: crate::locks::rfc3339(l.created),
                expires: l.expires.map(crate::locks::rfc3339).unwrap_or_default(),
            })
            .collect())
    }

    async fn status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Status, Error> {
        require_root(&hdr, conn).await?;
        let core = self.core.clone();
        blocking(move || Ok(status(&core))).await
    }
}
