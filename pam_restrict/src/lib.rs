//! `pam_restrict.so`: a PAM session module. `session required pam_restrict.so`
//! in /etc/pam.d/sshd makes every SSH login a restrictd session.
//!
//! open_session asks restrictd (D-Bus system bus) to put the calling process
//! (sshd's `[priv]` process, parent of the user's shell) into a new session,
//! and exports its id as RESTRICTD_SESSION_ID. close_session closes it.
//!
//! Module arguments: `fail=closed|open` (default closed), `timeout=MS`
//! (default 3000), `start_timeout=MS` (default 30000), `debug`. The module
//! never panics across the FFI boundary (pam-bindings catches unwinds),
//! never leaves a thread behind in sshd (one `zbus::block_on` per call, the
//! connection dropped inside it), and never waits longer than its timeouts:
//! `start_timeout` for a stopped restrictd to be started by the bus, then
//! `timeout` for the exchange.

use std::{
    ffi::{CStr, CString},
    os::raw::{c_char, c_int},
    time::Duration,
};

use pam::{
    constants::{PamFlag, PamResultCode},
    items::{RHost, Service, Tty, User},
    module::{PamHandle, PamHooks},
    pam_hooks,
};
use restrictd_dbus::{Daemon1Proxy, OpenRequest};

pub const ENV_NAME: &str = "RESTRICTD_SESSION_ID";
const DATA_KEY: &str = "pam_restrict.session_id";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// How long open_session waits for a stopped restrictd to be started by bus
/// activation: its start loads and verifies the BPF programs, which takes
/// seconds on a slow host (an emulated VM), longer than a call should.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// restrictd unreachable or refusing: the login is denied.
    Closed,
    /// restrictd unreachable or refusing: the login proceeds, unrestricted, with a warning.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub fail: FailMode,
    pub timeout: Duration,
    /// 0: a stopped restrictd is not started (the call fails at once).
    pub start_timeout: Duration,
    pub debug: bool,
}

/// Parses module arguments. Bad arguments do not stop parsing: each is
/// reported, and a valid `fail=` still decides how the failure is handled.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> (Args, Vec<String>) {
    let mut a = Args {
        fail: FailMode::Closed,
        timeout: DEFAULT_TIMEOUT,
        start_timeout: DEFAULT_START_TIMEOUT,
        debug: false,
    };
    let mut errors = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        match arg.split_once('=') {
            Some(("fail", "closed")) => a.fail = FailMode::Closed,
            Some(("fail", "open")) => a.fail = FailMode::Open,
            Some(("fail", v)) => {
                errors.push(format!("fail={v:?}: expected fail=closed or fail=open"))
            }
            Some(("timeout", v)) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 && Duration::from_millis(ms) <= MAX_TIMEOUT => {
                    a.timeout = Duration::from_millis(ms)
                }
                _ => errors.push(format!(
                    "timeout={v:?}: expected milliseconds from 1 to {}",
                    MAX_TIMEOUT.as_millis()
                )),
            },
            Some(("start_timeout", v)) => match v.parse::<u64>() {
                Ok(ms) if Duration::from_millis(ms) <= 2 * MAX_TIMEOUT => {
                    a.start_timeout = Duration::from_millis(ms)
                }
                _ => errors.push(format!(
                    "start_timeout={v:?}: expected milliseconds from 0 to {}",
                    2 * MAX_TIMEOUT.as_millis()
                )),
            },
            None if arg == "debug" => a.debug = true,
            _ => errors.push(format!("unknown argument {arg:?}")),
        }
    }
    (a, errors)
}

struct PamRestrict;
pam_hooks!(PamRestrict);

#[link(name = "pam")]
extern "C" {
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
    fn pam_putenv(pamh: *mut PamHandle, name_value: *const c_char) -> c_int;
    fn pam_getenv(pamh: *const PamHandle, name: *const c_char) -> *const c_char;
}

/// The PAM environment variables the daemon is told (`PAM_ENV_KEYS`).
fn pam_env(pamh: &PamHandle) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for key in restrictd_dbus::PAM_ENV_KEYS {
        let Ok(name) = CString::new(key) else {
            continue;
        };
        // SAFETY: pamh is the live handle; PAM owns the returned string,
        // which stays valid until the environment changes (copied at once).
        let v = unsafe { pam_getenv(pamh, name.as_ptr()) };
        if !v.is_null() {
            let v = unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned();
            out.insert(key.to_string(), v);
        }
    }
    out
}

/// Logs through pam_syslog: facility authpriv, prefixed "pam_restrict(service:session)".
fn log(pamh: &PamHandle, priority: c_int, msg: &str) {
    let msg = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: pamh is the live handle PAM passed us; "%s" takes one C string.
    unsafe { pam_syslog(pamh, priority, c"%s".as_ptr(), msg.as_ptr()) };
}

fn item<'a, T: pam::items::Item<'a> + std::ops::Deref<Target = &'a CStr>>(
    pamh: &'a PamHandle,
) -> String {
    match pamh.get_item::<T>() {
        Ok(Some(v)) => v.to_string_lossy().into_owned(),
        _ => String::new(),
    }
}

fn args_to_strings(args: &[&CStr]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Why an exchange with restrictd failed.
#[derive(Debug)]
struct Failure {
    /// restrictd refused the login on purpose (a session limit, a lock):
    /// denied whatever `fail=` says.
    refused: bool,
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            refused: false,
            message,
        }
    }
}

/// Runs one D-Bus exchange with restrictd, bounded by `timeout` as a whole
/// (connect, authenticate, call).
fn with_daemon<T, F, Fut>(timeout: Duration, start_timeout: Duration, f: F) -> Result<T, Failure>
where
    F: FnOnce(Daemon1Proxy<'static>) -> Fut,
    Fut: std::future::Future<Output = zbus::Result<T>>,
{
    zbus::block_on(async move {
        let runtime = match zruntime::SharedRuntime::current() {
            Ok(r) => r,
            Err(e) => return Err(format!("no runtime for the D-Bus call: {e}").into()),
        };
        let no_answer =
            |t: Duration| format!("no answer from restrictd within {} ms", t.as_millis());
        let conn = match runtime
            .timeout(
                timeout,
                zbus::connection::Builder::system()
                    .method_timeout(timeout.max(start_timeout))
                    .build(),
            )
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(describe(&e).into()),
            Err(_) => return Err(no_answer(timeout).into()),
        };
        if !start_timeout.is_zero() {
            // A stopped restrictd is started by the bus first; whatever
            // goes wrong there, the call below says it.
            if runtime
                .timeout(start_timeout, ensure_started(&conn))
                .await
                .is_err()
            {
                return Err(format!(
                    "restrictd was not started within {} ms (start_timeout)",
                    start_timeout.as_millis()
                )
                .into());
            }
        }
        let work = async {
            let proxy = Daemon1Proxy::new(&conn).await?;
            f(proxy).await
        };
        let res = match runtime.timeout(timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure {
                refused: refused(&e),
                message: describe(&e),
            }),
            Err(_) => Err(no_answer(timeout).into()),
        };
        // conn drops here, inside block_on: nothing is left to run afterwards.
        drop(conn);
        res
    })
}

/// The daemon has no such method.
fn unknown_method(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => {
            name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod"
        }
        zbus::Error::FDO(f) => matches!(**f, zbus::fdo::Error::UnknownMethod(_)),
        _ => false,
    }
}

/// Asks the bus to start restrictd if nobody owns its name (it is stopped,
/// or not started yet); returns once it owns the name, or the bus refused
/// (not activatable, or its unit masked).
async fn ensure_started(conn: &zbus::Connection) -> zbus::Result<()> {
    let bus = zbus::fdo::DBusProxy::new(conn).await?;
    let name = zbus::names::BusName::try_from(restrictd_dbus::BUS_NAME)?;
    if !bus.name_has_owner(name.clone()).await? {
        bus.start_service_by_name(
            zbus::names::WellKnownName::try_from(restrictd_dbus::BUS_NAME)?,
            0,
        )
        .await?;
    }
    Ok(())
}

/// restrictd refused the login on purpose.
fn refused(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _) if name.as_str() == restrictd_dbus::errors::REFUSED)
}

/// Shows the user `msg` (sshd prints it before it closes the connection).
fn tell_user(pamh: &PamHandle, msg: &str) {
    if let Ok(Some(conv)) = pamh.get_item::<pam::conv::Conv>() {
        let _ = conv.send(pam::constants::PAM_ERROR_MSG, msg);
    }
}

fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(msg), _) => format!("{name}: {msg}"),
        zbus::Error::FDO(fdo) => fdo.to_string(),
        other => other.to_string(),
    }
}

impl PamHooks for PamRestrict {
    fn sm_open_session(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        let (args, errors) = parse_args(&args_to_strings(&args));
        let fail = |pamh: &mut PamHandle, why: &str| -> PamResultCode {
            match args.fail {
                FailMode::Closed => {
                    log(
                        pamh,
                        libc::LOG_ERR,
                        &format!("{why}; login denied (fail=closed)"),
                    );
                    PamResultCode::PAM_SESSION_ERR
                }
                FailMode::Open => {
                    log(
                        pamh,
                        libc::LOG_WARNING,
                        &format!(
                            "{why}; login allowed WITHOUT restriction or recording (fail=open)"
                        ),
                    );
                    PamResultCode::PAM_SUCCESS
                }
            }
        };
        if !errors.is_empty() {
            return fail(
                pamh,
                &format!("bad module arguments: {}", errors.join("; ")),
            );
        }
        let login = item::<User>(pamh);
        if login.is_empty() {
            return fail(pamh, "no PAM_USER");
        }
        let Some(uid) = uid_of(&login) else {
            return fail(pamh, &format!("unknown user {login:?}"));
        };
        let request = OpenRequest {
            login: login.clone(),
            uid,
            remote_host: item::<RHost>(pamh),
            service: item::<Service>(pamh),
            tty: item::<Tty>(pamh),
        };
        let env = pam_env(pamh);
        let sid = match with_daemon(args.timeout, args.start_timeout, |p| async move {
            match p.open_session_env(&request, &env).await {
                // A daemon from before OpenSessionEnv (during an upgrade).
                Err(e) if unknown_method(&e) => p.open_session(&request).await,
                r => r,
            }
        }) {
            Ok(sid) => sid,
            Err(Failure {
                refused: true,
                message,
            }) => {
                // On purpose, so not subject to fail=open: the user is
                // told why, as restrictd worded it.
                let why = message.split_once(": ").map_or(message.as_str(), |m| m.1);
                log(pamh, libc::LOG_WARNING, &format!("restrictd: {why}"));
                tell_user(pamh, &format!("restrictd: {why}"));
                return PamResultCode::PAM_PERM_DENIED;
            }
            Err(e) => {
                return fail(
                    pamh,
                    &format!("cannot open a restrictd session for {login}: {}", e.message),
                )
            }
        };
        let env = CString::new(format!("{ENV_NAME}={sid}")).unwrap_or_default();
        // SAFETY: live handle; PAM copies the string.
        if unsafe { pam_putenv(pamh, env.as_ptr()) } != 0 {
            log(
                pamh,
                libc::LOG_WARNING,
                &format!("could not export {ENV_NAME}"),
            );
        }
        if pamh.set_data(DATA_KEY, Box::new(sid.clone())).is_err() {
            log(
                pamh,
                libc::LOG_WARNING,
                "could not remember the session id for close_session",
            );
        }
        if args.debug {
            log(
                pamh,
                libc::LOG_DEBUG,
                &format!("session {sid} opened for {login}"),
            );
        }
        PamResultCode::PAM_SUCCESS
    }

    fn sm_close_session(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        let (args, _) = parse_args(&args_to_strings(&args));
        // SAFETY: DATA_KEY is only ever set by open_session, with a Box<String>.
        let sid = match unsafe { pamh.get_data::<String>(DATA_KEY) } {
            Ok(s) => s.clone(),
            // open_session did not open one (fail=open, or another module failed first).
            Err(_) => return PamResultCode::PAM_IGNORE,
        };
        let close_sid = sid.clone();
        // A logout does not start a stopped restrictd: it would know no session.
        match with_daemon(args.timeout, Duration::ZERO, |p| async move {
            p.close_session(&close_sid).await
        }) {
            Ok(()) => {
                if args.debug {
                    log(pamh, libc::LOG_DEBUG, &format!("session {sid} closed"));
                }
            }
            // The session stays known to restrictd, restricted, until its processes are gone.
            Err(e) => log(
                pamh,
                libc::LOG_ERR,
                &format!("closing restrictd session {sid}: {}", e.message),
            ),
        }
        // A failed close must not turn into a failed logout.
        PamResultCode::PAM_SUCCESS
    }
}

fn uid_of(login: &str) -> Option<u32> {
    let name = CString::new(login).ok()?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; getpwnam_r is thread-safe.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some(pw.pw_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let (a, e) = parse_args::<&str>(&[]);
        assert!(e.is_empty());
        assert_eq!(a.fail, FailMode::Closed);
        assert_eq!(a.timeout, DEFAULT_TIMEOUT);
        assert_eq!(a.start_timeout, DEFAULT_START_TIMEOUT);
        assert!(!a.debug);
    }

    #[test]
    fn all_arguments() {
        let (a, e) = parse_args(&["fail=open", "timeout=250", "start_timeout=5000", "debug"]);
        assert!(e.is_empty());
        assert_eq!(
            a,
            Args {
                fail: FailMode::Open,
                timeout: Duration::from_millis(250),
                start_timeout: Duration::from_millis(5000),
                debug: true
            }
        );
    }

    #[test]
    fn bad_arguments_are_named_and_fail_mode_still_applies() {
        let (a, e) = parse_args(&["fail=open", "timeout=abc", "fial=closed", "debug=1"]);
        assert_eq!(a.fail, FailMode::Open);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("timeout=\"abc\""));
        assert!(e[1].contains("fial=closed"));
        assert!(e[2].contains("debug=1"));
        let (a, e) = parse_args(&["fail=maybe"]);
        assert_eq!(a.fail, FailMode::Closed, "an unreadable fail= means closed");
        assert!(e[0].contains("maybe"));
        for bad in [
            "timeout=0",
            "timeout=-5",
            "timeout=600000",
            "timeout=",
            "start_timeout=-1",
            "start_timeout=600000",
            "start_timeout=x",
        ] {
            assert_eq!(parse_args(&[bad]).1.len(), 1, "{bad}");
        }
        assert_eq!(
            parse_args(&["start_timeout=0"]).0.start_timeout,
            Duration::ZERO
        );
    }
}
