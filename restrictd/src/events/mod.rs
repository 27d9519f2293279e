//! Audit events: their Teleport-compatible JSON form (`Event`), the kinds of
//! event (`kinds`: one place per kind for its name, code, MESSAGE_ID,
//! summary line and fields) and where they are written (`output`).

mod journal;
mod kinds;
pub mod output;

use std::borrow::Cow;

use serde::Serialize;

pub use self::kinds::{
    CommandBody, ConnectionFields, DiskBody, Exe, LockBody, LockCreatedBody, LockDeletedBody,
    LockTarget, Losses, LostBody, NetworkBody, SessionEndBody, SessionRejectedBody,
    SessionStartBody,
};
pub use self::output::Output;

pub const SYSLOG_IDENTIFIER: &str = "restrictd";

/// journald MESSAGE_ID of the lost-events report.
pub const LOST_MESSAGE_ID: &str = "fcb5828396bb428c9a9d4021c5026427";

/// What identifies a kind of event wherever it is written.
pub struct KindInfo {
    /// Teleport's event name (`event`).
    pub event: &'static str,
    /// Teleport's event code (`code`).
    pub code: &'static str,
    /// journald MESSAGE_ID (`journalctl MESSAGE_ID=...`).
    pub message_id: &'static str,
    /// For kinds the kernel records: the record kind (`EVENT_*`, which also
    /// indexes its loss counter) and the name used in loss reports.
    pub record: Option<(u32, &'static str)>,
}

/// One kind of event: its fields are the implementing struct's.
pub trait Kind: Serialize {
    const INFO: KindInfo;
    /// The one-line human summary (journald MESSAGE); `who` is the user, or
    /// the session when the user is not known.
    fn summary(&self, who: &str, sid: &str) -> String;
    /// Written at warning priority.
    fn denied(&self) -> bool {
        false
    }
}

/// Declares `Body`, one variant per kind, and the table of kinds.
macro_rules! event_kinds {
    ($($variant:ident($body:ty)),* $(,)?) => {
        #[derive(Debug, Clone, Serialize)]
        #[serde(untagged)]
        pub enum Body {
            $($variant($body)),*
        }

        impl Body {
            pub fn info(&self) -> &'static KindInfo {
                match self {
                    $(Body::$variant(_) => &<$body as Kind>::INFO),*
                }
            }

            fn summary(&self, who: &str, sid: &str) -> String {
                match self {
                    $(Body::$variant(b) => b.summary(who, sid)),*
                }
            }

            fn denied(&self) -> bool {
                match self {
                    $(Body::$variant(b) => b.denied()),*
                }
            }
        }

        /// Every kind of event.
        pub const KINDS: &[&KindInfo] = &[$(&<$body as Kind>::INFO),*];
    };
}

event_kinds!(
    Command(CommandBody),
    Disk(DiskBody),
    Network(NetworkBody),
    SessionStart(SessionStartBody),
    SessionEnd(SessionEndBody),
    Lost(LostBody),
    SessionRejected(SessionRejectedBody),
    LockCreated(LockCreatedBody),
    LockDeleted(LockDeletedBody),
);

pub use self::kinds::from_record;

impl Body {
    /// The program of an event whose record carries only its inode, for
    /// the recorder to name (`exes`).
    pub fn exe_mut(&mut self) -> Option<&mut Exe> {
        match self {
            Body::Disk(b) => Some(&mut b.exe),
            Body::Network(b) => Some(&mut b.exe),
            _ => None,
        }
    }
}

/// The journald MESSAGE_ID of the event kind named `event` ("session.disk").
pub fn message_id(event: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|k| k.event == event)
        .map(|k| k.message_id)
}

/// One audit event, serialized flat as Teleport does.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: &'static str,
    pub code: &'static str,
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    /// Per-session event index, increasing with `time`.
    pub ei: u64,
    /// Teleport's unique event id: a random UUID for each event.
    pub uid: uuid::Uuid,
    pub sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// Teleport's server namespace: "default".
    pub namespace: &'static str,
    /// This host's id (its machine id as a UUID; `session::server_id`).
    pub server_id: std::sync::Arc<str>,
    pub server_hostname: std::sync::Arc<str>,
    /// A process of a restricted user outside every session (a cron job,
    /// a login without the PAM line): `sid` is empty, `user` says who.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub outside_session: bool,
    #[serde(flatten)]
    pub body: Body,
}

impl Event {
    pub fn message_id(&self) -> &'static str {
        self.body.info().message_id
    }

    pub fn denied(&self) -> bool {
        self.body.denied()
    }

    /// The one-line human summary (journald MESSAGE).
    pub fn summary(&self) -> String {
        let who = match (&self.user, self.outside_session) {
            (Some(u), true) => format!("{u} (outside a session)"),
            (Some(u), false) => u.clone(),
            (None, _) => format!("session {}", self.sid),
        };
        escape_text(&self.body.summary(&who, &self.sid)).into_owned()
    }

    /// `each_journal_field`'s fields as a list (for the tests).
    #[cfg(test)]
    pub fn journal_fields(&self) -> Vec<(String, String)> {
        let json = serde_json::to_string(self).expect("events serialize");
        let mut out = Vec::new();
        self.each_journal_field(&json, |k, v| out.push((k.to_string(), v.to_string())));
        out
    }

    /// journald fields: every event field, UPPERCASE (`sid` as `SESSION_ID`),
    /// plus MESSAGE_ID, SYSLOG_IDENTIFIER and the whole event as EVENT_JSON
    /// (`event_json`, the event already serialized), each given to `f` as
    /// it is made: the writer puts them straight into the datagram, without
    /// a list of owned strings per event.
    pub fn each_journal_field(&self, event_json: &str, mut f: impl FnMut(&str, &str)) {
        f("MESSAGE_ID", self.message_id());
        f("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER);
        f("SYSLOG_FACILITY", "10"); // authpriv
        let mut key = String::new();
        // The fields are read back from the event's JSON text, each value
        // as its raw text, one after the other: no tree of values is built.
        each_json_field(event_json, |k, v| {
            key.clear();
            match k {
                "sid" => key.push_str("SESSION_ID"),
                "time" => key.push_str("EVENT_TIME"),
                // journald field names: A-Z, 0-9 and _ only ("addr.remote" -> ADDR_REMOTE).
                k => key.extend(k.chars().map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })),
            }
            // What journalctl shows: no control character, so no value
            // can forge a line or make journald store it as a blob.
            let raw = v.get();
            if raw.starts_with('"') {
                // Borrowed when the string has no JSON escapes.
                match serde_json::from_str::<&str>(raw) {
                    Ok(s) => f(&key, &escape_text(s)),
                    Err(_) => f(
                        &key,
                        &escape_text(&serde_json::from_str::<String>(raw).unwrap_or_default()),
                    ),
                }
            } else {
                f(&key, &escape_json(raw))
            }
        });
        f("EVENT_JSON", event_json);
    }
}

/// Calls `f` with each top-level key of the JSON object `json` and its
/// value's raw text, in the text's order.
fn each_json_field(json: &str, f: impl FnMut(&str, &serde_json::value::RawValue)) {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Each<F>(F);
    impl<'de, F: FnMut(&str, &serde_json::value::RawValue)> Visitor<'de> for Each<F> {
        type Value = ();
        fn expecting(&self, fmt: &mut std::fmt::Formatter) -> std::fmt::Result {
            fmt.write_str("an event object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some((k, v)) =
                map.next_entry::<&'de str, &'de serde_json::value::RawValue>()?
            {
                (self.0)(k, v);
            }
            Ok(())
        }
    }
    serde_json::Deserializer::from_str(json)
        .deserialize_map(Each(f))
        .expect("an event is a JSON object with plain keys");
}

/// Whether a reader's terminal could act on `c` rather than show it: C0 and
/// C1 controls, DEL, line and paragraph separators, and the bidirectional
/// formatting characters that reorder what is displayed around them.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Text from a session (argv, paths, process names) as a person reading
/// the log should see it: every unsafe character (`is_unsafe_char`)
/// written as `\xNN` or `\u{NNNN}`, and a backslash as `\\`, so the
/// escapes cannot be imitated. `EVENT_JSON` keeps the exact text.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_unsafe_char(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if is_unsafe_char(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// JSON text (a field that is an array or object) with the characters
/// JSON leaves raw but a terminal acts on (DEL, C1, bidi) as `\uNNNN`
/// escapes, so it stays valid JSON.
pub(crate) fn escape_json(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The current CLOCK_BOOTTIME, the clock the kernel stamps records with.
pub fn now_boot_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// CLOCK_REALTIME − CLOCK_BOOTTIME. NTP slews both clocks alike, so it
/// changes only when the wall clock is set. Two clock reads per event made
/// it jitter by however long the writer was preempted between them (event
/// times went back by 17 µs within one process's opens), so it is measured
/// with a tight bracket, kept, re-measured at most once a second, and
/// changed only by more than a millisecond (a clock step).
fn wall_offset() -> i128 {
    use nix::time::{clock_gettime, ClockId};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static KEPT: Mutex<Option<(i128, Instant)>> = Mutex::new(None);
    let ns = |c| {
        clock_gettime(c)
            .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
            .unwrap_or(0)
    };
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((offset, at)) = *kept {
        if at.elapsed() < Duration::from_secs(1) {
            return offset;
        }
    }
    // The realtime read between two boottime reads, the closest of three.
    let measured = (0..3)
        .map(|_| {
            let b1 = ns(ClockId::CLOCK_BOOTTIME);
            let r = ns(ClockId::CLOCK_REALTIME);
            let b2 = ns(ClockId::CLOCK_BOOTTIME);
            (b2 - b1, r - (b1 + b2) / 2)
        })
        .min_by_key(|&(gap, _)| gap)
        .map_or(0, |(_, offset)| offset);
    let offset = match *kept {
        Some((old, _)) if (measured - old).abs() <= 1_000_000 => old,
        _ => measured,
    };
    *kept = Some((offset, Instant::now()));
    offset
}

/// Converts a kernel CLOCK_BOOTTIME timestamp to RFC 3339 wall-clock time.
pub fn boot_ns_to_rfc3339(boot_ns: u64) -> String {
    let wall = boot_ns as i128 + wall_offset();
    let dt = chrono::DateTime::from_timestamp(
        wall.div_euclid(1_000_000_000) as i64,
        wall.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event: "session.network",
            code: "T4002I",
            time: "2026-01-01T00:00:00.000000001Z".into(),
            ei: 3,
            uid: "5b0d7a3e-8f5c-4d2a-9a41-3f6b1c2d4e5f".parse().unwrap(),
            sid: "s-1".into(),
            user: Some("alice".into()),
            login: Some("alice".into()),
            namespace: "default",
            server_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            server_hostname: "h".into(),
            outside_session: false,
            body: Body::Network(NetworkBody {
                pid: 42,
                audit: Default::default(),
                unix_uid: 1000,
                cgroup_id: 7,
                program: "curl".into(),
                exe: Exe::default(),
                src_addr: "0.0.0.0".into(),
                src_port: 0,
                dst_addr: "10.1.2.4".into(),
                dst_port: 443,
                version: 4,
                operation: 0,
                action: 1,
                protocol: 6,
                reason: "",
                repeats: 0,
                policy: None,
                rule: None,
            }),
        }
    }

    #[test]
    fn json_is_flat_teleport_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["event"], "session.network");
        assert_eq!(v["code"], "T4002I");
        assert_eq!(v["dst_addr"], "10.1.2.4");
        assert_eq!(v["dst_port"], 443);
        assert_eq!(v["action"], 1);
        assert_eq!(v["sid"], "s-1");
    }

    #[test]
    fn journal_fields_are_uppercase_and_complete() {
        let f: std::collections::HashMap<_, _> = sample().journal_fields().into_iter().collect();
        assert_eq!(f["SESSION_ID"], "s-1");
        assert_eq!(f["DST_PORT"], "443");
        assert_eq!(f["MESSAGE_ID"], NetworkBody::INFO.message_id);
        assert_eq!(f["SYSLOG_IDENTIFIER"], "restrictd");
        for k in f.keys() {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && !k.starts_with('_'),
                "bad journald field name {k}"
            );
        }
        let back: serde_json::Value = serde_json::from_str(&f["EVENT_JSON"]).unwrap();
        assert_eq!(back["dst_addr"], "10.1.2.4");
        assert_eq!(
            sample().summary(),
            "alice: denied connect to 10.1.2.4:443 by curl (pid 42)"
        );
    }

    /// A process may call itself anything; the program it runs is named
    /// beside the name whenever the two differ.
    #[test]
    fn a_process_name_cannot_hide_the_program() {
        let mut ev = sample();
        let Body::Network(b) = &mut ev.body else {
            unreachable!()
        };
        b.program = "sshd".into();
        b.exe = Exe::new("/home/alice/.x/tool".into(), 0);
        assert_eq!(
            ev.summary(),
            "alice: denied connect to 10.1.2.4:443 by sshd [/home/alice/.x/tool] (pid 42)"
        );
        let Body::Network(b) = &mut ev.body else {
            unreachable!()
        };
        b.exe = Exe::new("/memfd:sshd".into(), restrictd_common::EXE_UNLINKED);
        assert!(ev.summary().contains("by sshd [/memfd:sshd] (pid"));
        let f: std::collections::HashMap<_, _> = ev.journal_fields().into_iter().collect();
        assert_eq!(
            (f["EXE_MEMFD"].as_str(), f["EXE_UNLINKED"].as_str()),
            ("true", "true")
        );
        // The same name: nothing added.
        let Body::Network(b) = &mut ev.body else {
            unreachable!()
        };
        b.program = "curl".into();
        b.exe = Exe::new("/usr/bin/curl".into(), 0);
        assert!(ev.summary().ends_with("by curl (pid 42)"));
        // The same name, but only in the user's own mount namespace.
        let Body::Network(b) = &mut ev.body else {
            unreachable!()
        };
        b.exe = Exe::new("/usr/bin/curl".into(), restrictd_common::EXE_USER_MOUNT_NS);
        assert!(
            ev.summary()
                .ends_with("by curl [/usr/bin/curl (in the user's mount namespace)] (pid 42)"),
            "{}",
            ev.summary()
        );
        let f: std::collections::HashMap<_, _> = ev.journal_fields().into_iter().collect();
        assert_eq!(f["EXE_USER_MOUNT_NS"], "true");
    }

    #[test]
    fn text_a_person_reads_has_no_control_characters() {
        let hostile =
            "ls\n2026-01-01 host restrictd: alice ran /bin/true\x1b[2J\u{202e}txt.exe\\x0a\u{7f}";
        let mut ev = sample();
        ev.body = Body::Command(CommandBody {
            path: format!("/tmp/{hostile}"),
            exe: Exe::default(),
            program: "x\ty".into(),
            argv: vec![hostile.into()],
            argv0: Some("a".into()),
            argv_truncated: false,
            argv_length: None,
            pid: 1,
            audit: Default::default(),
            ppid: 0,
            unix_uid: 1000,
            return_code: 0,
            cgroup_id: 7,
        });
        let f: std::collections::HashMap<_, _> = ev.journal_fields().into_iter().collect();
        let shown = [
            ev.summary(),
            f["PATH"].clone(),
            f["PROGRAM"].clone(),
            f["ARGV"].clone(),
        ];
        for s in &shown {
            assert!(!s.chars().any(is_unsafe_char), "{s:?}");
        }
        assert_eq!(
            f["PROGRAM"], "x\\x09y",
            "escaped, and the escape cannot be typed in"
        );
        assert!(ev.summary().contains("\\x0a2026-01-01"), "{}", ev.summary());
        assert!(
            f["PATH"].contains("\\\\x0a"),
            "a typed backslash is doubled: {}",
            f["PATH"]
        );
        // ARGV stays JSON, and decodes to the exact argument.
        let argv: Vec<String> = serde_json::from_str(&f["ARGV"]).unwrap();
        assert_eq!(argv[0], hostile);
        let exact: serde_json::Value = serde_json::from_str(&f["EVENT_JSON"]).unwrap();
        assert_eq!(exact["argv"][0], hostile);
    }

    #[test]
    fn kinds_are_distinct() {
        for (i, a) in KINDS.iter().enumerate() {
            for b in &KINDS[i + 1..] {
                assert_ne!(a.event, b.event);
                assert_ne!(a.code, b.code);
                assert_ne!(a.message_id, b.message_id);
                if let (Some(x), Some(y)) = (a.record, b.record) {
                    assert_ne!(x, y);
                }
            }
        }
    }

    #[test]
    fn boot_time_converts_to_now() {
        let s = boot_ns_to_rfc3339(now_boot_ns());
        let parsed = chrono::DateTime::parse_from_rfc3339(&s).unwrap();
        let skew = (chrono::Utc::now() - parsed.with_timezone(&chrono::Utc)).num_seconds();
        assert!(skew.abs() < 5, "{s}");
        assert!(s.ends_with('Z') && s.len() == "2026-01-01T00:00:00.000000000Z".len());
    }

    /// Events are written in kernel time order; their wall-clock times must
    /// keep it. Each conversion once read the two clocks anew, so one kernel
    /// time came out as many (apart by however long the writer was
    /// preempted between the reads), and later events could show earlier
    /// times.
    #[test]
    fn one_kernel_time_is_one_wall_time_and_order_is_kept() {
        let t = now_boot_ns();
        let first = boot_ns_to_rfc3339(t);
        let mut last = first.clone();
        for i in 0..20_000u64 {
            assert_eq!(boot_ns_to_rfc3339(t), first, "call {i}");
            let later = boot_ns_to_rfc3339(t + i);
            assert!(later >= last, "{later} after {last}");
            last = later;
        }
    }
}
