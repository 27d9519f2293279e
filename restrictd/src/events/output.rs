//! Where events go: a JSON-lines file if asked for, and the system log —
//! journald's native protocol, or syslog facility authpriv where there is no
//! journal. Only the recorder's writer thread writes here.

use std::{io::Write, path::Path};

use super::{journal::Journal, Event, KINDS, LOST_MESSAGE_ID, SYSLOG_IDENTIFIER};
use crate::bpf::Lost;

pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Where events go. Each event goes to the JSON file (if any) and to the
/// system log. A failed write is reported on stderr with the event itself, so
/// an event is never silently dropped.
pub struct Output {
    json: Option<Box<dyn Write + Send>>,
    system: SystemLog,
    /// The event being written, as a JSON line: reused, so that an event
    /// costs no allocation for its text.
    line: Vec<u8>,
}

enum SystemLog {
    Journal(Journal),
    Syslog(Box<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>),
    None,
}

impl Output {
    /// `events`: `None`, `-` (stderr) or a file to append to.
    pub fn new(events: Option<&Path>) -> anyhow::Result<Output> {
        let json: Option<Box<dyn Write + Send>> = match events {
            None => None,
            Some(p) if p == Path::new("-") => Some(Box::new(std::io::stderr())),
            // Buffered: written out once per batch (`flush`), not once per event.
            Some(p) => Some(Box::new(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("--events {}: {e}", p.display()))?,
            ))),
        };
        Ok(Output {
            json,
            system: SystemLog::detect(),
            line: Vec::with_capacity(4096),
        })
    }

    pub fn system_log_name(&self) -> &'static str {
        match self.system {
            SystemLog::Journal(_) => "journald",
            SystemLog::Syslog(_) => "syslog",
            SystemLog::None => "none",
        }
    }

    /// Reports records the kernel could not deliver since the last report
    /// (journald: MESSAGE_ID `LOST_MESSAGE_ID`, a field `LOST_<KIND>` per
    /// kind the kernel records; syslog: the same as text).
    pub fn report_lost(&mut self, lost: Lost) {
        let kinds: Vec<(&str, u64)> = KINDS
            .iter()
            .filter_map(|k| k.record)
            .map(|(kind, name)| (name, lost.kind(kind)))
            .collect();
        let counts = kinds
            .iter()
            .map(|(name, n)| format!("{n} {name}"))
            .collect::<Vec<_>>()
            .join(", ");
        let msg = format!(
            "restrictd: events lost because a ring buffer was full: {counts} (raise enhanced_recording.*_buffer_size)"
        );
        log::warn!("{msg}");
        let res = match &mut self.system {
            SystemLog::Journal(j) => j
                .send(|f| {
                    f.add("PRIORITY", "4");
                    f.add("MESSAGE", &msg);
                    f.add("MESSAGE_ID", LOST_MESSAGE_ID);
                    f.add("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER);
                    f.add("SYSLOG_FACILITY", "10");
                    for (name, n) in &kinds {
                        f.add(&format!("LOST_{}", name.to_uppercase()), &n.to_string());
                    }
                })
                .map_err(|e| anyhow::anyhow!("{e}")),
            SystemLog::Syslog(l) => l.warning(&msg).map_err(|e| anyhow::anyhow!("{e}")),
            SystemLog::None => Ok(()),
        };
        if let Err(e) = res {
            log::error!("system log write failed ({e}): {msg}");
        }
    }

    /// Writes out what the `--events` file has buffered: after each batch of
    /// events, so the file is at most one batch (about 20 ms) behind.
    pub fn flush(&mut self) {
        if let Some(w) = &mut self.json {
            if let Err(e) = w.flush() {
                log::error!("writing events to --events file failed: {e}");
            }
        }
    }

    /// Writes `ev`; false when no system log took it (it went to stderr).
    pub fn emit(&mut self, ev: &Event) -> bool {
        // Serialized once, for every destination.
        self.line.clear();
        serde_json::to_writer(&mut self.line, ev).expect("events serialize");
        self.line.push(b'\n');
        if let Some(w) = &mut self.json {
            if let Err(e) = w.write_all(&self.line) {
                log::error!("writing event to --events file failed: {e}");
            }
        }
        // serde_json writes UTF-8 only.
        let json = std::str::from_utf8(&self.line[..self.line.len() - 1]).expect("JSON is UTF-8");
        let res = match &mut self.system {
            SystemLog::Journal(j) => send_journal(j, ev, json).or_else(|e| {
                // journald may have gone away: try syslog before giving up.
                log::warn!("journald write failed ({e}); trying syslog");
                SystemLog::detect_syslog().map_or(Err(e), |mut l| send_syslog(&mut l, ev, json))
            }),
            SystemLog::Syslog(l) => send_syslog(l, ev, json),
            SystemLog::None => Ok(()),
        };
        match res {
            Ok(()) => true,
            Err(e) => {
                log::error!("system log write failed ({e}); event: {json}");
                false
            }
        }
    }
}

impl SystemLog {
    fn detect() -> SystemLog {
        if Path::new(JOURNAL_SOCKET).exists() {
            return SystemLog::Journal(Journal::new(JOURNAL_SOCKET));
        }
        if let Some(l) = SystemLog::detect_syslog() {
            return SystemLog::Syslog(Box::new(l));
        }
        log::warn!(
            "neither {JOURNAL_SOCKET} nor {SYSLOG_SOCKET} exists: events go only to --events"
        );
        SystemLog::None
    }

    fn detect_syslog() -> Option<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>> {
        if !Path::new(SYSLOG_SOCKET).exists() {
            return None;
        }
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_AUTHPRIV,
            hostname: None,
            process: SYSLOG_IDENTIFIER.into(),
            pid: std::process::id(),
        };
        syslog::unix(formatter).ok()
    }
}

fn send_journal(j: &mut Journal, ev: &Event, json: &str) -> anyhow::Result<()> {
    // syslog's levels: warning for a denial, info for the rest.
    let priority = if ev.denied() { "4" } else { "6" };
    j.send(|f| {
        f.add("PRIORITY", priority);
        f.add("MESSAGE", &ev.summary());
        ev.each_journal_field(json, |k, v| f.add(k, v));
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn send_syslog(
    l: &mut syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>,
    ev: &Event,
    json: &str,
) -> anyhow::Result<()> {
    // JSON escapes C0 controls; DEL, C1 and bidi characters too, for
    // whoever reads the log on a terminal.
    let json = super::escape_json(json);
    if ev.denied() {
        l.warning(&*json)
    } else {
        l.info(&*json)
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::journal::fake::{bind, parse, receive};

    /// The lost-records report reaches journald as one entry: a warning
    /// with its MESSAGE_ID and a LOST_<KIND> count per recorded kind.
    #[test]
    fn lost_records_are_reported_to_journald_per_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = bind(&path);
        let mut out = Output {
            json: None,
            system: SystemLog::Journal(Journal::new(&path)),
            line: Vec::new(),
        };
        let mut lost = Lost::default();
        for (i, v) in lost.0.iter_mut().enumerate() {
            *v = 10 + i as u64;
        }
        out.report_lost(lost);
        let fields: std::collections::HashMap<String, String> =
            parse(&receive(&server)).into_iter().collect();
        assert_eq!(fields["MESSAGE_ID"], LOST_MESSAGE_ID);
        assert_eq!(fields["PRIORITY"], "4");
        assert_eq!(fields["SYSLOG_IDENTIFIER"], SYSLOG_IDENTIFIER);
        let kinds: Vec<_> = KINDS.iter().filter_map(|k| k.record).collect();
        assert!(!kinds.is_empty());
        for (kind, name) in kinds {
            let n = lost.kind(kind).to_string();
            assert_eq!(
                fields[&format!("LOST_{}", name.to_uppercase())],
                n,
                "{name}"
            );
            assert!(fields["MESSAGE"].contains(&format!("{n} {name}")), "{name}");
        }
    }
}
