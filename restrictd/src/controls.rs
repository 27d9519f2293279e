//! Session controls: how many sessions a user may have at once, how long a
//! session may sit without terminal input, and how long it may last. The
//! host default is the config's `session_controls`; a per-login policy's
//! `controls` overrides it key by key (0 turns a limit off).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Limits as written; `None` means "not set here" (the host default, or no
/// limit), `Some(0)` / `Some(ZERO)` means explicitly no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Controls {
    /// Sessions of one user at a time; a login beyond it is refused.
    pub max_sessions: Option<u32>,
    /// No terminal input for this long ends the session (sessions with a
    /// terminal only).
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// A session older than this is ended.
    #[serde(deserialize_with = "duration")]
    pub max_duration: Option<Duration>,
}

/// `"15m"`, `"1h 30m"`, `"900s"` (humantime), or a number of seconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"15m\", \"8h\" or \"90s\", or seconds")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Duration::from_secs(v)))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(|s| Some(Duration::from_secs(s)))
                .map_err(|_| E::custom(format!("{v}: a duration cannot be negative")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_duration(v).map(Some).map_err(E::custom)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if v == "0" || v == "off" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(v)
        .map_err(|e| format!("{v:?} is not a duration such as \"15m\", \"8h\" or \"90s\": {e}"))
}

/// The limits in force for one session: a policy's, else the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effective {
    pub max_sessions: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub max_duration: Option<Duration>,
}

impl Controls {
    /// `self` (a policy's) over `host`; zero means no limit.
    pub fn over(&self, host: &Controls) -> Effective {
        Effective {
            max_sessions: self.max_sessions.or(host.max_sessions).filter(|n| *n > 0),
            idle_timeout: self
                .idle_timeout
                .or(host.idle_timeout)
                .filter(|d| !d.is_zero()),
            max_duration: self
                .max_duration
                .or(host.max_duration)
                .filter(|d| !d.is_zero()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Controls::default()
    }

    /// The keys set here ("max_sessions 1, idle_timeout off"), for
    /// `restrictd check`.
    pub fn describe(&self) -> String {
        let d = |v: Duration| if v.is_zero() { "off".into() } else { show(v) };
        let mut parts = Vec::new();
        if let Some(n) = self.max_sessions {
            parts.push(match n {
                0 => "max_sessions off".to_string(),
                n => format!("max_sessions {n}"),
            });
        }
        if let Some(v) = self.idle_timeout {
            parts.push(format!("idle_timeout {}", d(v)));
        }
        if let Some(v) = self.max_duration {
            parts.push(format!("max_duration {}", d(v)));
        }
        parts.join(", ")
    }

    /// What is wrong with the limits, if anything (`what` names them).
    pub fn validate(&self, what: &str) -> Result<(), String> {
        for (key, d) in [
            ("idle_timeout", self.idle_timeout),
            ("max_duration", self.max_duration),
        ] {
            if let Some(d) = d.filter(|d| !d.is_zero()) {
                if d < MIN_LIMIT {
                    return Err(format!(
                        "{what}.{key}: {} is shorter than the shortest limit, {}",
                        show(d),
                        show(MIN_LIMIT)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Shorter limits could not be told from the terminal's 8-second input
/// clock (see `idle`), nor warned about.
pub const MIN_LIMIT: Duration = Duration::from_secs(10);

/// How long before a session is ended for idleness or age its terminals
/// are warned: a minute, or a third of a shorter limit.
pub fn warn_before(limit: Duration) -> Duration {
    (limit / 3).min(Duration::from_secs(60))
}

/// A duration as people write it ("15m", "1h 30m").
pub fn show(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Effective {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.max_sessions {
            parts.push(format!("max_sessions {n}"));
        }
        if let Some(d) = self.idle_timeout {
            parts.push(format!("idle_timeout {}", show(d)));
        }
        if let Some(d) = self.max_duration {
            parts.push(format!("max_duration {}", show(d)));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The terminal input clock of a pty: the slave's atime, which the kernel
/// sets when a process reads input from it (`tty_update_time`, in 8-second
/// steps). A user can set the atime of their own pty (`touch`), but that
/// sets its ctime to now too, which a read never does: an atime is taken
/// as input only when it is past the ctime by more than a step and not in
/// the future.
pub mod idle {
    use std::{os::unix::fs::MetadataExt, path::Path, time::SystemTime};

    /// The kernel's step: an atime within this of the ctime may be a touch.
    const STEP: i64 = 8;

    /// Seconds since the epoch of the last input the pty at `path` shows,
    /// if its atime can be trusted as input.
    pub fn last_input(path: &Path) -> Option<i64> {
        let m = std::fs::metadata(path).ok()?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        let (atime, ctime) = (m.atime(), m.ctime());
        (atime > ctime + STEP && atime <= now + 1).then_some(atime)
    }

    /// The ptys whose masters process `pid` holds (sshd's `[priv]` keeps
    /// the master of every pty it allocated for the connection's
    /// sessions), as `/dev/pts/N`. The user cannot change what a root
    /// process holds; ptys the user opens themselves are not among them.
    pub fn ptys_of(pid: u32) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return out;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if target != Path::new("/dev/ptmx") && target != Path::new("/dev/pts/ptmx") {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            if let Some(n) = info
                .lines()
                .find_map(|l| l.strip_prefix("tty-index:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                out.push(std::path::PathBuf::from(format!("/dev/pts/{n}")));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policys_limits_override_the_hosts_key_by_key_and_zero_is_off() {
        let host: Controls =
            serde_saphyr::from_str("max_sessions: 2\nidle_timeout: 15m\nmax_duration: \"8h\"\n")
                .unwrap();
        assert_eq!(host.idle_timeout, Some(Duration::from_secs(900)));
        let policy: Controls =
            serde_saphyr::from_str("idle_timeout: 0\nmax_sessions: 5\n").unwrap();
        let e = policy.over(&host);
        assert_eq!(e.max_sessions, Some(5));
        assert_eq!(e.idle_timeout, None, "0 turns the host's limit off");
        assert_eq!(e.max_duration, Some(Duration::from_secs(8 * 3600)));
        assert_eq!(Controls::default().over(&host).max_sessions, Some(2));
        let secs: Controls = serde_saphyr::from_str("idle_timeout: 600\n").unwrap();
        assert_eq!(secs.idle_timeout, Some(Duration::from_secs(600)));
    }

    #[test]
    fn bad_limits_are_named() {
        let e = serde_saphyr::from_str::<Controls>("idle_timeout: soon\n").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
        assert!(serde_saphyr::from_str::<Controls>("max_session: 2\n").is_err());
        assert!(serde_saphyr::from_str::<Controls>("idle_timeout: -5\n").is_err());
        let short: Controls = serde_saphyr::from_str("idle_timeout: 3s\n").unwrap();
        let m = short.validate("session_controls").unwrap_err();
        assert!(m.contains("session_controls.idle_timeout"), "{m}");
    }

    #[test]
    fn warnings_come_a_minute_or_a_third_before() {
        assert_eq!(
            warn_before(Duration::from_secs(900)),
            Duration::from_secs(60)
        );
        assert_eq!(
            warn_before(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
    }
}
