//! Terminal recordings: one file per session under `terminal.dir`, written
//! by the recorder, read by `restrictctl play`, `show` and `export`.
//!
//! Files rather than the journal: a session's terminal can be megabytes,
//! byte-exact replay needs the bytes as they were (journald takes text
//! fields and rate-limits by message count), and a size cap on files is
//! exact. The file is JSON lines, readable with `jq`: a header line, then
//! one line per terminal chunk (base64, so every byte is kept) or per
//! event of the session (the same JSON as in the journal, with its message
//! for people), in the order the kernel saw them. Events stay in the
//! journal too: the file adds their place between the terminal's output.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{
    config::TerminalStorage,
    events::{boot_ns_to_rfc3339, Event},
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const FORMAT_VERSION: u32 = 1;

/// The first line of a recording.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// Always `FORMAT_VERSION`: what this file is.
    pub restrictd_terminal: u32,
    pub sid: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub remote: String,
    #[serde(default)]
    pub hostname: String,
    /// Wall time of `t` = 0 (RFC 3339).
    pub time: String,
    /// `output` or `input_output`.
    pub mode: String,
}

/// One line after the header: `t` seconds after the header's time, and
/// one of terminal output `o`, input `i` (base64), a gap of `gap` bytes not
/// recorded, or an event `e` with its message `m`. `tty` and `size`
/// (rows, columns) go with terminal lines.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Line {
    pub t: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<[u16; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub o: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<String>,
}

/// The recording file of session `sid`.
pub fn path_of(dir: &Path, sid: &str) -> PathBuf {
    dir.join(format!("{sid}.tty.jsonl"))
}

/// What the recorder knows of a session when its recording opens.
#[derive(Debug, Clone)]
pub struct Meta {
    pub sid: String,
    pub user: Option<String>,
    pub login: Option<String>,
    pub remote: String,
    pub hostname: String,
    pub mode: &'static str,
}

struct Open {
    file: BufWriter<File>,
    /// CLOCK_BOOTTIME of `t` = 0.
    start_ns: u64,
    /// Terminal bytes written, against `max_session_size`.
    bytes: u64,
    /// Bytes the kernel left out that the file marks so far.
    marked: u64,
    /// `t` of the last line.
    last_t: f64,
}

/// The recorder's side: open recordings, by sid.
pub struct Store {
    cfg: TerminalStorage,
    open: HashMap<String, Open>,
    /// Sessions whose file could not be made (reported once).
    failed: std::collections::HashSet<String>,
}

impl Store {
    pub fn new(cfg: TerminalStorage) -> Store {
        Store {
            cfg,
            open: HashMap::new(),
            failed: Default::default(),
        }
    }

    pub fn is_open(&self, sid: &str) -> bool {
        self.open.contains_key(sid)
    }

    /// Opens (or, after a daemon restart, reopens) the recording of
    /// `meta.sid`, starting its clock at `boot_ns`. Older finished
    /// recordings are removed first if the directory would pass
    /// `max_total_size`.
    pub fn open(&mut self, meta: &Meta, boot_ns: u64) {
        if self.open.contains_key(&meta.sid) || self.failed.contains(&meta.sid) {
            return;
        }
        match self.create(meta, boot_ns) {
            Ok(o) => {
                self.open.insert(meta.sid.clone(), o);
            }
            Err(e) => {
                log::error!("terminal recording of session {} not kept: {e:#}", meta.sid);
                self.failed.insert(meta.sid.clone());
            }
        }
    }

    fn create(&mut self, meta: &Meta, boot_ns: u64) -> Result<Open> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.cfg.dir)
            .with_context(|| format!("creating {}", self.cfg.dir.display()))?;
        self.make_room();
        let path = path_of(&self.cfg.dir, &meta.sid);
        // A restarted daemon continues the file: its header keeps the clock.
        if let Ok(existing) = Recording::load(&path) {
            let age = existing
                .lines
                .last()
                .map(|l| (l.t * 1e9) as u64)
                .unwrap_or(0);
            let bytes = existing.terminal_bytes();
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            return Ok(Open {
                file: BufWriter::new(file),
                start_ns: boot_ns.saturating_sub(age),
                bytes,
                marked: existing.lines.iter().filter_map(|l| l.gap).sum(),
                last_t: age as f64 / 1e9,
            });
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut file = BufWriter::new(file);
        let header = Header {
            restrictd_terminal: FORMAT_VERSION,
            sid: meta.sid.clone(),
            user: meta.user.clone(),
            login: meta.login.clone(),
            remote: meta.remote.clone(),
            hostname: meta.hostname.clone(),
            time: boot_ns_to_rfc3339(boot_ns),
            mode: meta.mode.to_string(),
        };
        writeln!(file, "{}", serde_json::to_string(&header)?)?;
        Ok(Open {
            file,
            start_ns: boot_ns,
            bytes: 0,
            marked: 0,
            last_t: 0.0,
        })
    }

    /// Removes the oldest recordings not open now until the directory has
    /// room for one more session's worth below `max_total_size`.
    fn make_room(&self) {
        let Ok(rd) = std::fs::read_dir(&self.cfg.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tty.jsonl"))
            .filter_map(|e| {
                let md = e.metadata().ok()?;
                Some((md.modified().ok()?, md.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let budget = self
            .cfg
            .max_total_size
            .saturating_sub(self.cfg.max_session_size);
        if total <= budget {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= budget {
                break;
            }
            let sid = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".tty.jsonl"))
                .unwrap_or("");
            if self.open.contains_key(sid) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    log::warn!(
                        "terminal.max_total_size: removed the oldest recording {}",
                        path.display()
                    );
                    total -= len;
                }
                Err(e) => log::error!("removing {}: {e}", path.display()),
            }
        }
    }

    /// Appends terminal bytes of `sid`; returns the bytes left out by
    /// `max_session_size` (marked in the file as a gap), or all of them
    /// when the session's file could not be made.
    #[allow(clippy::too_many_arguments)]
    pub fn terminal(
        &mut self,
        sid: &str,
        boot_ns: u64,
        tty: u32,
        size: [u16; 2],
        input: bool,
        dropped_before: u64,
        data: &[u8],
    ) -> u64 {
        let max = self.cfg.max_session_size;
        // Not open: its file could not be made (logged). The bytes are
        // counted as left out, not lost without a trace.
        let Some(o) = self.open.get_mut(sid) else {
            return data.len() as u64;
        };
        let t = secs(boot_ns, o.start_ns);
        o.last_t = t;
        o.marked += dropped_before;
        let mut left_out = 0;
        let room = max.saturating_sub(o.bytes);
        let keep = &data[..data.len().min(room as usize)];
        if keep.len() < data.len() {
            left_out = (data.len() - keep.len()) as u64;
        }
        if dropped_before > 0 {
            write_line(
                &mut o.file,
                &Line {
                    t,
                    tty: Some(tty),
                    gap: Some(dropped_before),
                    ..Default::default()
                },
            );
        }
        if !keep.is_empty() {
            // Written by hand: base64 needs no JSON escaping, and scanning
            // it for some was most of the writer's time.
            let mut line = String::with_capacity(keep.len() * 4 / 3 + 64);
            line.push_str(&format!("{{\"t\":{t},\"tty\":{tty},"));
            if size != [0, 0] {
                line.push_str(&format!("\"size\":[{},{}],", size[0], size[1]));
            }
            line.push_str(if input { "\"i\":\"" } else { "\"o\":\"" });
            B64.encode_string(keep, &mut line);
            line.push_str("\"}\n");
            if let Err(e) = o.file.write_all(line.as_bytes()) {
                log::error!("writing a terminal recording: {e}");
            }
            o.bytes += keep.len() as u64;
        }
        if left_out > 0 {
            write_line(
                &mut o.file,
                &Line {
                    t,
                    tty: Some(tty),
                    gap: Some(left_out),
                    ..Default::default()
                },
            );
        }
        left_out
    }

    /// Appends an event of its session, if that session is recorded.
    pub fn event(&mut self, boot_ns: u64, ev: &Event) {
        let Some(o) = self.open.get_mut(&ev.sid) else {
            return;
        };
        let Ok(e) = serde_json::to_value(ev) else {
            return;
        };
        o.last_t = secs(boot_ns, o.start_ns);
        write_line(
            &mut o.file,
            &Line {
                t: o.last_t,
                e: Some(e),
                m: Some(ev.summary()),
                ..Default::default()
            },
        );
    }

    /// Closes `sid`'s recording (its session ended). `kernel_dropped`:
    /// the bytes the kernel counted as left out for the session in all;
    /// those no later record could mark (the end of a flood) are marked
    /// here.
    pub fn close(&mut self, sid: &str, kernel_dropped: u64) {
        if let Some(mut o) = self.open.remove(sid) {
            if kernel_dropped > o.marked {
                write_line(
                    &mut o.file,
                    &Line {
                        t: o.last_t,
                        gap: Some(kernel_dropped - o.marked),
                        ..Default::default()
                    },
                );
            }
            if let Err(e) = o.file.flush() {
                log::error!("writing the terminal recording of {sid}: {e}");
            }
        }
        self.failed.remove(sid);
    }

    /// Writes out what is buffered (after each batch, as the event file).
    pub fn flush(&mut self) {
        for (sid, o) in self.open.iter_mut() {
            if let Err(e) = o.file.flush() {
                log::error!("writing the terminal recording of {sid}: {e}");
            }
        }
    }
}

fn secs(boot_ns: u64, start_ns: u64) -> f64 {
    // Microseconds are what players use; rounding keeps the file short.
    (boot_ns.saturating_sub(start_ns) / 1_000) as f64 / 1e6
}

fn write_line(f: &mut BufWriter<File>, l: &Line) {
    let mut s = serde_json::to_string(l).expect("a line serializes");
    s.push('\n');
    if let Err(e) = f.write_all(s.as_bytes()) {
        log::error!("writing a terminal recording: {e}");
    }
}

// ---- reading ------------------------------------------------------------

/// A recording as read back.
#[derive(Debug, Clone)]
pub struct Recording {
    pub header: Header,
    pub lines: Vec<Line>,
}

/// A terminal chunk, decoded.
pub struct Chunk {
    pub t: f64,
    pub tty: u32,
    pub size: Option<[u16; 2]>,
    pub input: bool,
    pub data: Vec<u8>,
}

impl Recording {
    pub fn load(path: &Path) -> Result<Recording> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines().enumerate();
        let Some((_, first)) = lines.next() else {
            bail!("{}: empty, not a terminal recording", path.display());
        };
        let header: Header = serde_json::from_str(first)
            .with_context(|| format!("{}:1: not a restrictd terminal recording", path.display()))?;
        if header.restrictd_terminal != FORMAT_VERSION {
            bail!(
                "{}:1: recording format {}, this restrictctl reads {FORMAT_VERSION}",
                path.display(),
                header.restrictd_terminal
            );
        }
        let mut out = Vec::new();
        for (n, l) in lines {
            if l.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(l) {
                Ok(line) => out.push(line),
                // A line cut by a crash mid-write ends the usable part.
                Err(e) => {
                    log::warn!("{}:{}: {e}; read up to there", path.display(), n + 1);
                    break;
                }
            }
        }
        Ok(Recording { header, lines: out })
    }

    /// Recording of session `sid` under `dir`, with an error that says
    /// where it was looked for.
    pub fn of_session(dir: &Path, sid: &str) -> Result<Recording> {
        if sid.is_empty() || sid.contains('/') || sid.starts_with('.') {
            bail!("{sid:?} is not a session id");
        }
        let path = path_of(dir, sid);
        if !path.exists() {
            bail!(
                "no recording of session {sid} in {} (terminal_recording off for it, or removed by terminal.max_total_size); its events are in the journal: journalctl SESSION_ID={sid}",
                dir.display()
            );
        }
        Recording::load(&path)
    }

    pub fn chunks(&self) -> impl Iterator<Item = Chunk> + '_ {
        self.lines.iter().filter_map(|l| {
            let (enc, input) = match (&l.o, &l.i) {
                (Some(o), _) => (o, false),
                (None, Some(i)) => (i, true),
                _ => return None,
            };
            Some(Chunk {
                t: l.t,
                tty: l.tty.unwrap_or(0),
                size: l.size,
                input,
                data: B64.decode(enc).ok()?,
            })
        })
    }

    /// Terminal bytes (output and input) in the file.
    pub fn terminal_bytes(&self) -> u64 {
        self.chunks().map(|c| c.data.len() as u64).sum()
    }

    /// The terminal a replay shows: `tty`, or the first one with output.
    pub fn main_tty(&self, tty: Option<u32>) -> Option<u32> {
        tty.or_else(|| self.chunks().find(|c| !c.input).map(|c| c.tty))
    }

    /// The output of terminal `tty`, byte for byte.
    pub fn output(&self, tty: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for c in self.chunks().filter(|c| !c.input && c.tty == tty) {
            out.extend_from_slice(&c.data);
        }
        out
    }

    /// Replays terminal `tty`'s output to `out` with its timing divided by
    /// `speed`, pauses cut to `max_idle` seconds; gaps are told on
    /// `notes`.
    pub fn play(
        &self,
        tty: u32,
        speed: f64,
        max_idle: f64,
        out: &mut dyn Write,
        notes: &mut dyn Write,
    ) -> Result<()> {
        let mut last = 0.0;
        for l in &self.lines {
            if l.tty.unwrap_or(0) != tty || l.i.is_some() || l.e.is_some() {
                continue;
            }
            let wait = ((l.t - last).max(0.0)).min(max_idle) / speed;
            last = l.t;
            if wait > 0.0005 {
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_secs_f64(wait));
            }
            if let Some(gap) = l.gap {
                writeln!(
                    notes,
                    "\r\n[restrictd: {gap} bytes of this terminal were not recorded here]\r"
                )?;
            }
            if let Some(o) = &l.o {
                out.write_all(&B64.decode(o).context("a corrupt output line")?)?;
            }
        }
        out.flush()?;
        Ok(())
    }

    /// asciicast v2 (asciinema's format) of terminal `tty`: output, input
    /// and resizes. asciicast holds text: bytes that are not UTF-8 become
    /// U+FFFD (the recording itself keeps them).
    pub fn asciicast(&self, tty: u32) -> String {
        let first_size = self
            .chunks()
            .filter(|c| c.tty == tty)
            .find_map(|c| c.size)
            .unwrap_or([24, 80]);
        let timestamp = chrono::DateTime::parse_from_rfc3339(&self.header.time)
            .map(|t| t.timestamp())
            .unwrap_or(0);
        let header = serde_json::json!({
            "version": 2,
            "width": first_size[1],
            "height": first_size[0],
            "timestamp": timestamp,
            "title": format!("{} session {}", self.header.user.as_deref().unwrap_or("?"), self.header.sid),
        });
        let mut out = format!("{header}\n");
        let mut size = first_size;
        let mut text = [Utf8Stream::default(), Utf8Stream::default()];
        for c in self.chunks().filter(|c| c.tty == tty) {
            if let Some(s) = c.size {
                if s != size {
                    size = s;
                    out.push_str(&format!(
                        "{}\n",
                        serde_json::json!([c.t, "r", format!("{}x{}", s[1], s[0])])
                    ));
                }
            }
            let s = text[c.input as usize].push(&c.data);
            if !s.is_empty() {
                let code = if c.input { "i" } else { "o" };
                out.push_str(&format!("{}\n", serde_json::json!([c.t, code, s])));
            }
        }
        out
    }
}

/// UTF-8 decoding across chunk boundaries: a character split between two
/// reads is joined, not replaced.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, data: &[u8]) -> String {
        self.pending.extend_from_slice(data);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (ok, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(ok).expect("valid up to here"));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{fffd}');
                            rest = &after[n..];
                        }
                        // Incomplete at the end: wait for the next chunk.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

// ---- show -----------------------------------------------------------------

/// Terminal text for reading: escape sequences (colours, cursor moves)
/// dropped, CR LF as LF, other control characters shown as `\xNN`, so
/// that nothing a session printed can move the reader's cursor or forge a
/// line prefix.
pub fn readable(data: &[u8]) -> String {
    let s = String::from_utf8_lossy(data);
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: parameters, then a final byte in @..~.
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST.
                Some(']') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            },
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\n' | '\t' => out.push(c),
            '\u{8}' => {
                out.pop();
            }
            c if crate::events::is_unsafe_char(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// One entry of `show`, in time order.
#[derive(Debug, Clone, Serialize)]
pub struct ShowItem {
    /// Seconds after the recording's start.
    pub t: f64,
    /// `command`, `network`, `disk`, `event` (others), `output`, `input`,
    /// `gap`.
    pub kind: String,
    /// What a person reads: the event's message, or the terminal's text.
    pub text: String,
    /// Commands: depth in the session's process tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Terminal text: which pty (`/dev/pts/N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
}

/// The session as a person reads it: events with commands nested by
/// their process tree, and the terminal's text between them.
pub fn show(rec: &Recording) -> Vec<ShowItem> {
    let mut depth_of: HashMap<u64, usize> = HashMap::new();
    let mut out: Vec<ShowItem> = Vec::new();
    for l in &rec.lines {
        if let Some(e) = &l.e {
            let name = e["event"].as_str().unwrap_or("");
            let kind = match name {
                "session.command" => "command",
                "session.network" => "network",
                "session.disk" => "disk",
                _ => "event",
            };
            let mut depth = None;
            if kind == "command" {
                let pid = e["pid"].as_u64().unwrap_or(0);
                let ppid = e["ppid"].as_u64().unwrap_or(0);
                let d = depth_of.get(&ppid).map(|d| d + 1).unwrap_or(0);
                depth_of.insert(pid, d);
                depth = Some(d);
            }
            out.push(ShowItem {
                t: l.t,
                kind: kind.into(),
                text: l.m.clone().unwrap_or_else(|| name.to_string()),
                depth,
                tty: None,
                denied: e["action"] == 1,
                event: Some(e.clone()),
            });
            continue;
        }
        if let Some(gap) = l.gap {
            out.push(ShowItem {
                t: l.t,
                kind: "gap".into(),
                text: format!("{gap} bytes of the terminal not recorded"),
                depth: None,
                tty: l.tty,
                denied: false,
                event: None,
            });
            continue;
        }
        let (enc, kind) = match (&l.o, &l.i) {
            (Some(o), _) => (o, "output"),
            (None, Some(i)) => (i, "input"),
            _ => continue,
        };
        let text = readable(&B64.decode(enc).unwrap_or_default());
        // Consecutive pieces of one terminal read as one block.
        if let Some(last) = out.last_mut() {
            if last.kind == kind && last.tty == l.tty {
                last.text.push_str(&text);
                continue;
            }
        }
        out.push(ShowItem {
            t: l.t,
            kind: kind.into(),
            text,
            depth: None,
            tty: l.tty,
            denied: false,
            event: None,
        });
    }
    out
}

/// `show`'s text form.
pub fn show_text(rec: &Recording, color: bool) -> String {
    let h = &rec.header;
    let mut s = format!(
        "session {}\nuser {} (login {}) from {} on {}\nstarted {} · terminal recording: {}\n\n",
        h.sid,
        h.user.as_deref().unwrap_or("?"),
        h.login.as_deref().unwrap_or("?"),
        if h.remote.is_empty() { "?" } else { &h.remote },
        h.hostname,
        h.time,
        h.mode
    );
    let (red, off) = if color {
        ("\x1b[1;31m", "\x1b[0m")
    } else {
        ("", "")
    };
    let items = show(rec);
    // A session with several terminals (multiplexed channels, or a pty a
    // user's own sshd made) says which text is whose.
    let mut ttys: Vec<u32> = items.iter().filter_map(|i| i.tty).collect();
    ttys.sort_unstable();
    ttys.dedup();
    for item in items {
        let at = format!("{:>9.3}s", item.t);
        match item.kind.as_str() {
            "output" | "input" => {
                let mark = if item.kind == "input" { ">" } else { " " };
                let bar = match item.tty {
                    Some(t) if ttys.len() > 1 => format!("│pts/{t}{mark}"),
                    _ => format!("│{mark}"),
                };
                let text = item.text.trim_end_matches('\n');
                if text.trim().is_empty() {
                    continue;
                }
                for line in text.split('\n') {
                    s.push_str(&format!("{:>10} {bar} {line}\n", ""));
                }
            }
            "command" => {
                let indent = "  ".repeat(item.depth.unwrap_or(0).min(20));
                s.push_str(&format!("{at} {indent}$ {}\n", item.text));
            }
            "gap" => s.push_str(&format!("{at} [{}]\n", item.text)),
            _ if item.denied => s.push_str(&format!("{at} {red}DENIED {}{off}\n", item.text)),
            _ => s.push_str(&format!("{at} {}\n", item.text)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_line_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TerminalStorage {
            dir: dir.path().to_path_buf(),
            max_session_size: 10,
            ..Default::default()
        };
        let mut st = Store::new(cfg);
        let meta = Meta {
            sid: "s1".into(),
            user: Some("alice".into()),
            login: None,
            remote: String::new(),
            hostname: "h".into(),
            mode: "output",
        };
        st.open(&meta, 1_000_000_000);
        let first: &[u8] = b"\x1b[1m\"a\"\n";
        assert_eq!(
            st.terminal("s1", 1_500_000_000, 3, [24, 80], false, 0, first),
            0
        );
        // Over max_session_size (10): 2 bytes kept, 10 left out and marked.
        assert_eq!(
            st.terminal("s1", 1_600_000_000, 3, [0, 0], true, 5, b"abcdefghijkl"),
            10
        );
        // The kernel counted 7 in all; 5 were marked by a record.
        st.close("s1", 7);
        let r = Recording::load(&path_of(dir.path(), "s1")).unwrap();
        let chunks: Vec<_> = r
            .chunks()
            .map(|c| (c.t, c.tty, c.size, c.input, c.data))
            .collect();
        assert_eq!(
            chunks,
            vec![
                (0.5, 3, Some([24, 80]), false, first.to_vec()),
                (0.6, 3, None, true, b"ab".to_vec()),
            ]
        );
        let gaps: Vec<u64> = r.lines.iter().filter_map(|l| l.gap).collect();
        assert_eq!(gaps, vec![5, 10, 2]);
    }

    #[test]
    fn a_session_id_cannot_name_another_file_and_a_missing_one_says_where() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../etc/passwd", ".hidden", "a/b"] {
            let e = Recording::of_session(dir.path(), bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("is not a session id"), "{bad}: {e}");
        }
        let e = Recording::of_session(dir.path(), "0f0e")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no recording of session 0f0e")
                && e.contains(&dir.path().display().to_string())
                && e.contains("journalctl SESSION_ID=0f0e"),
            "{e}"
        );
        std::fs::write(path_of(dir.path(), "x"), "not json\n").unwrap();
        let e = Recording::of_session(dir.path(), "x").unwrap_err();
        assert!(
            format!("{e:#}").contains(":1: not a restrictd terminal recording"),
            "{e:#}"
        );
    }

    #[test]
    fn a_character_split_between_reads_is_joined() {
        let mut u = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(u.push(&euro[..1]), "");
        assert_eq!(u.push(&euro[1..]), "€");
        assert_eq!(u.push(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn readable_text_drops_escapes_and_shows_controls() {
        assert_eq!(
            readable(b"\x1b[1;31mred\x1b[0m\r\nnext\x1b]0;title\x07x\x01"),
            "red\nnextx\\x01"
        );
        assert_eq!(readable(b"ab\x08c"), "ac");
    }
}
