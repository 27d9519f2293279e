//! From the kernel's ring buffers to the outputs, in the order the kernel
//! saw things. One writer thread per restrictd process owns the rings and
//! the `Output`: it reads every ring, merges the records with the session
//! starts and ends that the lifecycle submits by their CLOCK_BOOTTIME
//! stamps, has the `Registry` stamp them (sid, `ei`), and writes them.
//!
//! A record is held back `HOLD` after its timestamp before it is written,
//! so that one stamped earlier on another CPU, or in another ring, still
//! comes first (a record is committed within microseconds of its stamp).
//! Nobody else waits on a log write: submitting is a channel send.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
    eventfd::{EfdFlags, EventFd},
};
use restrictd_common::{
    record::{decode, Record},
    DenialKey, TtyEvent, TTY_INPUT,
};

use crate::{
    bpf::{Counters, DenialCounts, DropCounters, Lost, LostCounters},
    events::{from_record, now_boot_ns, Exe, Losses, Output},
    exes::ExeNames,
    repeats::AllowedRepeats,
    session::Registry,
    terminal::{Meta, Store},
};

/// How long a record waits for earlier-stamped ones before it is written.
const HOLD: Duration = Duration::from_millis(20);
/// How long a command's later argv parts are waited for (they are written
/// by the same program run, microseconds apart).
const PARTS_WAIT: Duration = Duration::from_millis(5);
/// How often the loss counters are read (per session: `session.lost`).
const LOST_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the writer looks at the rings while records come: the
/// programs wake it only with the record that fills a ring past each
/// eighth (`wake_when` in restrictd-ebpf), so a steady stream is collected on this tick, in
/// batches, rather than a pass (and a wakeup in the submitting process)
/// per few records. An event reaches the outputs HOLD to HOLD + TICK after
/// its stamp.
const TICK: Duration = Duration::from_millis(10);
/// The tick doubles, up to this, while nothing comes: an idle daemon wakes
/// ten times a second, and the first record after a quiet spell is written
/// within HOLD + IDLE_TICK.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// Loss reports are rate-limited to one per this interval.
const LOST_REPORT_EVERY: Duration = Duration::from_secs(10);

enum Msg {
    Start {
        boot_ns: u64,
        cgroup_id: u64,
    },
    End {
        boot_ns: u64,
        cgroup_id: u64,
        /// Record keys whose loss counts end with the session.
        keys: Vec<u64>,
    },
    /// An event of the daemon's own (a refused login, a lock), about
    /// `user` and no session.
    Daemon {
        boot_ns: u64,
        user: String,
        body: Box<crate::events::Body>,
    },
    Stop,
}

/// What waits to be written, in time order once sorted.
enum Item {
    Record(Record),
    /// Terminal bytes: to the session's recording, not the log.
    Tty(TtyEvent, Vec<u8>),
    Start(u64),
    End(u64, Vec<u64>),
    Daemon(String, Box<crate::events::Body>),
    /// What a record key lost since `since` (boot ns).
    Lost {
        key: u64,
        since: u64,
        lost: Losses,
    },
}

/// What a batch writes, in order, once the registry is let go. Nearly
/// all are events: boxing them would allocate once more per event.
#[allow(clippy::large_enum_variant)]
enum Out {
    Event(u64, crate::events::Event),
    Open(Meta, u64),
    Tty(String, TtyEvent, Vec<u8>),
    /// A session's end, with the terminal bytes the kernel left out.
    Close(String, u64),
}

struct Pending {
    boot_ns: u64,
    seq: u64,
    item: Item,
}

pub struct Recorder {
    tx: Mutex<mpsc::Sender<Msg>>,
    wake: Arc<EventFd>,
    /// The writer until `start` runs it on its thread.
    writer: Mutex<Option<Writer>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    system_log: &'static str,
    lost: Arc<LostCounters>,
}

impl Recorder {
    /// A recorder whose writer does not run yet (`start`): what is
    /// submitted meanwhile waits, so that sessions can be registered first.
    /// Losses counted before now are taken as reported (by a previous run
    /// of the daemon). With `terminal`, sessions that record their
    /// terminal get a recording file there.
    pub fn new(
        rings: Vec<(String, RingBuf<MapData>)>,
        counters: Counters,
        registry: Arc<Mutex<Registry>>,
        output: Output,
        terminal: Option<crate::config::TerminalStorage>,
    ) -> Result<Recorder> {
        let (tx, rx) = mpsc::channel();
        let wake = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .context("creating the recorder's eventfd")?,
        );
        let Counters {
            lost,
            dropped,
            denials,
        } = counters;
        let lost = Arc::new(lost);
        let system_log = output.system_log_name();
        let baseline = lost.read().unwrap_or_default();
        // Per-session counts from before this start were reported by the
        // daemon that counted them (it reports everything when it stops).
        let dropped_reported = dropped
            .read_all()
            .unwrap_or_default()
            .iter()
            .map(|(k, d)| (*k, Losses::from_kernel(d)))
            .collect();
        // Repeats counted before this start were reported by the daemon
        // that counted them.
        let denials_reported = denials
            .read_all()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, d)| (k, (d.first_ns, d.repeats)))
            .collect();
        let writer = Writer {
            exes: ExeNames::default(),
            terminal: terminal.map(Store::new),
            assembling: HashMap::new(),
            denials,
            denials_reported,
            allowed: AllowedRepeats::default(),
            dropped,
            dropped_reported,
            dropped_checked: now_boot_ns(),
            rings,
            rx,
            wake: wake.clone(),
            registry,
            output,
            lost: lost.clone(),
            pending: Vec::new(),
            got: Vec::new(),
            due: Vec::new(),
            outs: Vec::new(),
            seq: 0,
            written: 0,
            records: 0,
            reported: baseline,
            last_report: None,
            last_check: Instant::now(),
        };
        Ok(Recorder {
            tx: Mutex::new(tx),
            wake,
            writer: Mutex::new(Some(writer)),
            thread: Mutex::new(None),
            system_log,
            lost,
        })
    }

    /// Runs the writer on its own thread.
    pub fn start(&self) -> Result<()> {
        let Some(mut writer) = self.writer.lock().unwrap().take() else {
            return Ok(());
        };
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                if let Err(e) = writer.run() {
                    log::error!("event writer stopped: {e:#}");
                }
            })
            .context("starting the event writer")?;
        *self.thread.lock().unwrap() = Some(thread);
        Ok(())
    }

    fn send(&self, m: Msg) {
        let _ = self.tx.lock().unwrap().send(m);
        let _ = self.wake.arm();
    }

    /// Queues `session.start` of the session registered under `cgroup_id`,
    /// stamped `boot_ns` (taken before the session could run anything).
    pub fn session_started(&self, cgroup_id: u64, boot_ns: u64) {
        self.send(Msg::Start { boot_ns, cgroup_id });
    }

    /// Queues `session.end`: written after every record stamped before
    /// `boot_ns` and a last `session.lost` for `keys` (the session's record
    /// keys, whose loss counts end with it), then the session leaves the
    /// registry.
    pub fn session_ended(&self, cgroup_id: u64, boot_ns: u64, keys: Vec<u64>) {
        self.send(Msg::End {
            boot_ns,
            cgroup_id,
            keys,
        });
    }

    /// Queues an event of the daemon's own about `user`, outside any
    /// session, stamped now.
    pub fn daemon_event(&self, user: &str, body: crate::events::Body) {
        self.send(Msg::Daemon {
            boot_ns: now_boot_ns(),
            user: user.to_string(),
            body: Box::new(body),
        });
    }

    /// Writes everything queued or in the rings, then stops the writer.
    pub fn stop(&self) {
        self.send(Msg::Stop);
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }

    pub fn system_log_name(&self) -> &'static str {
        self.system_log
    }

    /// Records lost since the programs were loaded (a restarted daemon's
    /// maps keep counting).
    pub fn lost(&self) -> Lost {
        self.lost.read().unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Writer {
    rings: Vec<(String, RingBuf<MapData>)>,
    rx: mpsc::Receiver<Msg>,
    wake: Arc<EventFd>,
    registry: Arc<Mutex<Registry>>,
    output: Output,
    lost: Arc<LostCounters>,
    exes: ExeNames,
    terminal: Option<Store>,
    /// Commands waiting for more argv parts, by (pid, stamp): the record so
    /// far and the next part expected.
    assembling: HashMap<(u32, u64), (Record, u32)>,
    denials: DenialCounts,
    /// Per kind of denial: the entry's `first_ns` and the repeats reported.
    denials_reported: HashMap<DenialKey, (u64, u64)>,
    /// Allowed network events that repeat, folded into counts.
    allowed: AllowedRepeats,
    dropped: DropCounters,
    /// Per record key: the counts already reported.
    dropped_reported: HashMap<u64, Losses>,
    /// When `DROPPED` was last read (the start of the next report's window).
    dropped_checked: u64,
    pending: Vec<Pending>,
    /// Buffers of `read_rings` and `write_until`, kept between passes: their
    /// items are large, and growing them anew each pass was a tenth of the
    /// writer's CPU (reallocation, and malloc consolidating for it).
    got: Vec<Record>,
    due: Vec<Pending>,
    outs: Vec<Out>,
    seq: u64,
    /// Events written, and records read (for the CPU figures at stop).
    written: u64,
    records: u64,
    reported: Lost,
    last_report: Option<Instant>,
    last_check: Instant,
}

impl Writer {
    fn run(&mut self) -> Result<()> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
        for (i, (name, ring)) in self.rings.iter().enumerate() {
            // SAFETY: the ring (and its fd) lives as long as this writer.
            let fd = unsafe { BorrowedFd::borrow_raw(ring.as_raw_fd()) };
            // Edge-triggered: a ring with records in it wakes the writer
            // only when the programs ask (`TICK`), not on every wait.
            epoll
                .add(
                    fd,
                    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, i as u64),
                )
                .with_context(|| format!("polling ring buffer {name}"))?;
        }
        epoll
            .add(
                self.wake.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, u64::MAX),
            )
            .context("polling the recorder's eventfd")?;
        let mut events = [EpollEvent::empty(); 8];
        let mut tick = TICK;
        loop {
            let ms = tick.as_millis().clamp(1, 1000) as u16;
            match epoll.wait(&mut events, EpollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("epoll_wait"),
            }
            let _ = self.wake.read();
            let mut stop = false;
            while let Ok(m) = self.rx.try_recv() {
                match m {
                    Msg::Start { boot_ns, cgroup_id } => self.push(boot_ns, Item::Start(cgroup_id)),
                    Msg::End {
                        boot_ns,
                        cgroup_id,
                        keys,
                    } => self.push(boot_ns, Item::End(cgroup_id, keys)),
                    Msg::Daemon {
                        boot_ns,
                        user,
                        body,
                    } => self.push(boot_ns, Item::Daemon(user, body)),
                    Msg::Stop => stop = true,
                }
            }
            let n = self.read_rings();
            tick = if n > 0 || !self.pending.is_empty() {
                TICK
            } else {
                (tick * 2).min(IDLE_TICK)
            };
            if stop {
                self.check_denials();
                self.check_dropped();
                // Sessions that ended take their folds with their end;
                // the rest are written after.
                self.write_until(u64::MAX);
                let now = now_boot_ns();
                for ev in self.allowed.all(now) {
                    self.push(now, Item::Record(Record::Network(ev)));
                }
                self.write_until(u64::MAX);
                self.check_lost(true);
                let cpu = thread_cpu();
                // Per record: a record folded into another event's count
                // costs the writer too.
                log::info!(
                    "event writer: {} records, {} events, {:?} CPU ({:.1} µs per record)",
                    self.records,
                    self.written,
                    cpu,
                    cpu.as_secs_f64() * 1e6 / self.records.max(1) as f64
                );
                return Ok(());
            }
            self.write_until(now_boot_ns().saturating_sub(HOLD.as_nanos() as u64));
            if self.last_check.elapsed() >= LOST_CHECK_EVERY {
                self.check_allowed();
                self.check_denials();
                self.check_dropped();
                self.check_lost(false);
            }
        }
    }

    fn push(&mut self, boot_ns: u64, item: Item) {
        self.seq += 1;
        self.pending.push(Pending {
            boot_ns,
            seq: self.seq,
            item,
        });
    }

    /// Reads every ring buffer dry; returns how many records it read.
    fn read_rings(&mut self) -> usize {
        let mut got = std::mem::take(&mut self.got);
        for (name, ring) in self.rings.iter_mut() {
            while let Some(bytes) = ring.next() {
                match decode(&bytes) {
                    Ok(r) => got.push(r),
                    Err(e) => log::error!("ring buffer {name}: {e}"),
                }
            }
        }
        let n = got.len();
        self.records += n as u64;
        for r in got.drain(..) {
            if let Record::Tty(h, data) = r {
                self.push(h.header.boot_ns, Item::Tty(h, data));
                continue;
            }
            if let Some(r) = self.join_parts(r) {
                let r = match r {
                    Record::Network(ev) => {
                        let (fold, ev) = self.allowed.admit(ev);
                        if let Some(f) = fold {
                            self.push(f.header.boot_ns, Item::Record(Record::Network(f)));
                        }
                        match ev {
                            Some(ev) => Record::Network(ev),
                            None => continue,
                        }
                    }
                    r => r,
                };
                let t = r.header().boot_ns;
                self.push(t, Item::Record(r));
            }
        }
        keep(&mut got);
        self.got = got;
        // A command still missing parts well after its stamp lost them (a
        // full buffer or the session's share): written with what came, its
        // argv marked cut. Still within HOLD, so in time order.
        let now = now_boot_ns();
        let stale: Vec<(u32, u64)> = self
            .assembling
            .keys()
            .filter(|(_, t)| now.saturating_sub(*t) > PARTS_WAIT.as_nanos() as u64)
            .copied()
            .collect();
        for k in stale {
            if let Some((r, _)) = self.assembling.remove(&k) {
                self.push(k.1, Item::Record(r));
            }
        }
        n
    }

    /// A command record whose argv comes in parts is held until its last
    /// part has been appended; other records pass through.
    fn join_parts(&mut self, r: Record) -> Option<Record> {
        let Record::Command(h, _, _, argv) = &r else {
            return Some(r);
        };
        let key = (h.header.pid, h.header.boot_ns);
        if h.part == 0 {
            if h.parts <= 1 {
                return Some(r);
            }
            self.assembling.insert(key, (r, 1));
            return None;
        }
        // A later part: appended in order; one whose predecessor is
        // missing ends the argv there (the record shows it cut).
        let (part, parts) = (h.part, h.parts);
        let more = argv.clone();
        let (first, next) = self.assembling.get_mut(&key)?;
        if part != *next {
            return None;
        }
        if let Record::Command(fh, _, _, fargv) = first {
            fargv.extend_from_slice(&more);
            fh.argv_len += more.len() as u32;
        }
        *next += 1;
        if *next < parts {
            return None;
        }
        self.assembling.remove(&key).map(|(r, _)| r)
    }

    /// Writes, in time order, everything stamped at or before `cutoff`.
    fn write_until(&mut self, cutoff: u64) {
        if self.pending.is_empty() {
            return;
        }
        self.pending.sort_by_key(|p| (p.boot_ns, p.seq));
        let n = self.pending.partition_point(|p| p.boot_ns <= cutoff);
        if n == 0 {
            return;
        }
        let mut due = std::mem::take(&mut self.due);
        due.extend(self.pending.drain(..n));
        let mut outs = std::mem::take(&mut self.outs);
        {
            let registry = self.registry.clone();
            let mut reg = registry.lock().unwrap();
            // Recordings this batch opens (before their first item).
            let mut opening = HashSet::new();
            for p in due.drain(..) {
                match p.item {
                    Item::Record(r) => {
                        let h = *r.header();
                        // (Terminal records come as `Item::Tty`.)
                        let Some(body) = self.body(&r) else {
                            continue;
                        };
                        let ev = reg.stamp(h.cgroup_id, h.boot_ns, body);
                        self.open_recording(
                            &reg,
                            &mut outs,
                            &mut opening,
                            h.cgroup_id,
                            &ev.sid,
                            p.boot_ns,
                        );
                        outs.push(Out::Event(p.boot_ns, ev));
                    }
                    Item::Tty(h, data) => {
                        let key = h.header.cgroup_id;
                        if let Some(sid) = reg.terminal_sid(key) {
                            self.open_recording(
                                &reg,
                                &mut outs,
                                &mut opening,
                                key,
                                &sid,
                                p.boot_ns,
                            );
                            outs.push(Out::Tty(sid, h, data));
                        }
                    }
                    Item::Start(cg) => {
                        if let Some(ev) = reg.start_event(cg, p.boot_ns) {
                            self.open_recording(
                                &reg,
                                &mut outs,
                                &mut opening,
                                cg,
                                &ev.sid,
                                p.boot_ns,
                            );
                            outs.push(Out::Event(p.boot_ns, ev));
                        }
                    }
                    Item::Daemon(user, body) => outs.push(Out::Event(
                        p.boot_ns,
                        reg.user_event(&user, p.boot_ns, *body),
                    )),
                    Item::Lost { key, since, lost } => outs.push(Out::Event(
                        p.boot_ns,
                        reg.lost_event(key, p.boot_ns, since, lost),
                    )),
                    Item::End(cg, keys) => {
                        // The last counts of the session's keys, read now
                        // that it is out of the kernel's session table.
                        let folds = self.allowed.of_keys(p.boot_ns, &keys);
                        let denials = self.denial_reports(Some(&keys), p.boot_ns);
                        for r in folds.into_iter().map(Record::Network).chain(denials) {
                            let h = *r.header();
                            let Some(body) = self.body(&r) else {
                                continue;
                            };
                            outs.push(Out::Event(
                                h.boot_ns,
                                reg.stamp(h.cgroup_id, h.boot_ns, body),
                            ));
                        }
                        self.denials.remove_keys(&keys);
                        let mut tty_dropped = 0;
                        for key in keys {
                            let total = Losses::from_kernel(&self.dropped.read(key));
                            tty_dropped += total.terminal_bytes_dropped;
                            let before = self.dropped_reported.remove(&key).unwrap_or_default();
                            let new = total.since(&before);
                            if new.total() > 0 {
                                outs.push(Out::Event(
                                    p.boot_ns,
                                    reg.lost_event(key, p.boot_ns, self.dropped_checked, new),
                                ));
                            }
                            self.dropped.remove(key);
                        }
                        if let Some((s, ev)) = reg.end(cg, p.boot_ns) {
                            outs.push(Out::Event(p.boot_ns, ev));
                            outs.push(Out::Close(s.sid.to_string(), tty_dropped));
                        }
                    }
                }
            }
        }
        keep(&mut due);
        self.due = due;
        // Written without the registry lock: a login never waits on the log.
        for out in outs.drain(..) {
            match out {
                Out::Event(boot_ns, ev) => {
                    self.written += 1;
                    if !self.output.emit(&ev) && !ev.sid.is_empty() {
                        self.registry.lock().unwrap().note_unwritten(&ev.sid);
                    }
                    if let Some(t) = &mut self.terminal {
                        t.event(boot_ns, &ev);
                    }
                }
                Out::Open(meta, boot_ns) => {
                    if let Some(t) = &mut self.terminal {
                        t.open(&meta, boot_ns);
                    }
                }
                Out::Tty(sid, h, data) => {
                    if let Some(t) = &mut self.terminal {
                        let left_out = t.terminal(
                            &sid,
                            h.header.boot_ns,
                            h.tty,
                            [h.rows, h.cols],
                            h.direction == TTY_INPUT,
                            h.dropped_before,
                            &data,
                        );
                        if left_out > 0 {
                            self.registry
                                .lock()
                                .unwrap()
                                .note_terminal_dropped(&sid, left_out);
                        }
                    }
                }
                Out::Close(sid, tty_dropped) => {
                    if let Some(t) = &mut self.terminal {
                        t.close(&sid, tty_dropped);
                    }
                }
            }
        }
        keep(&mut outs);
        self.outs = outs;
        self.output.flush();
        if let Some(t) = &mut self.terminal {
            t.flush();
        }
    }

    /// Queues the opening of `sid`'s recording (record key `key`) before
    /// its next item, if the session records its terminal and it is not
    /// open yet (a new session, or one a restarted daemon continues).
    fn open_recording(
        &self,
        reg: &Registry,
        outs: &mut Vec<Out>,
        opening: &mut HashSet<String>,
        key: u64,
        sid: &str,
        boot_ns: u64,
    ) {
        let Some(t) = &self.terminal else {
            return;
        };
        if sid.is_empty() || t.is_open(sid) || opening.contains(sid) {
            return;
        }
        if let Some(m) = reg.terminal_of(key) {
            opening.insert(m.sid.clone());
            outs.push(Out::Open(m, boot_ns));
        }
    }

    /// The event body of a record, with the program named: command records
    /// name theirs (and teach `exes`), others are named from `exes`.
    fn body(&mut self, r: &Record) -> Option<crate::events::Body> {
        let h = r.header();
        let mut body = from_record(r)?;
        if let Record::Command(_, _, exe, _) = r {
            self.exes.learn(
                h.exe_dev,
                h.exe_ino,
                &String::from_utf8_lossy(exe),
                h.exe_flags,
            );
        } else if let Some(e) = body.exe_mut() {
            if let Some((name, flags)) = self.exes.name(h.pid, h.exe_dev, h.exe_ino) {
                *e = Exe::new(name, h.exe_flags | flags);
            }
        }
        Some(body)
    }

    /// Queues the folds of allowed network events whose window is over
    /// (those of ending sessions come with their end).
    fn check_allowed(&mut self) {
        let now = now_boot_ns();
        let ending = self.registry.lock().unwrap().ending_keys();
        for ev in self.allowed.due(now, |k| ending.contains(&k)) {
            self.push(now, Item::Record(Record::Network(ev)));
        }
    }

    /// Queues a report of every kind of denial repeated since the last
    /// check (those of ending sessions come with their end).
    fn check_denials(&mut self) {
        let now = now_boot_ns();
        for r in self.denial_reports(None, now) {
            self.push(now, Item::Record(r));
        }
    }

    /// Reports, stamped `at`, of the denials repeated since the last
    /// check: all but those of ending sessions, or only those of `keys`.
    /// Each is the kind's latest denial with `repeats` the new count.
    fn denial_reports(&mut self, keys: Option<&[u64]>, at: u64) -> Vec<Record> {
        let all = match self.denials.read_all() {
            Ok(all) => all,
            Err(e) => {
                log::error!("{e:#}");
                return Vec::new();
            }
        };
        // Only for the periodic check: at a session's end the registry is
        // already held by the caller.
        let ending = match keys {
            Some(_) => HashSet::new(),
            None => self.registry.lock().unwrap().ending_keys(),
        };
        let mut out = Vec::new();
        let mut seen = HashMap::with_capacity(all.len());
        for (k, d) in all {
            let mine = match keys {
                Some(keys) => keys.contains(&k.key),
                None => !ending.contains(&k.key),
            };
            let before = match self.denials_reported.get(&k) {
                Some(&(first, n)) if first == d.first_ns => n,
                _ => 0,
            };
            if !mine {
                seen.insert(k, (d.first_ns, before));
                continue;
            }
            if d.repeats > before {
                let mut ev = d.last;
                // This denial and `repeats` more since the previous report.
                ev.repeats = u32::try_from(d.repeats - before - 1).unwrap_or(u32::MAX);
                ev.header.boot_ns = at;
                out.push(Record::Network(ev));
            }
            seen.insert(k, (d.first_ns, d.repeats));
        }
        // Kinds no longer in the kernel (evicted, or their session ended)
        // are forgotten with it.
        self.denials_reported = seen;
        out
    }

    /// Queues a `session.lost` for every record key that lost events since
    /// the last check (one whose session is ending gets its report with
    /// `session.end`).
    fn check_dropped(&mut self) {
        let now = now_boot_ns();
        let all = match self.dropped.read_all() {
            Ok(all) => all,
            Err(e) => {
                log::error!("{e:#}");
                return;
            }
        };
        let ending = self.registry.lock().unwrap().ending_keys();
        let since = self.dropped_checked;
        self.dropped_checked = now;
        for (key, d) in all {
            if ending.contains(&key) {
                continue;
            }
            let total = Losses::from_kernel(&d);
            let before = self.dropped_reported.get(&key).copied().unwrap_or_default();
            let new = total.since(&before);
            if new.total() > 0 {
                self.dropped_reported.insert(key, total);
                self.push(
                    now,
                    Item::Lost {
                        key,
                        since,
                        lost: new,
                    },
                );
            }
        }
    }

    /// Reports newly lost records, at most once per `LOST_REPORT_EVERY`
    /// unless `now` (at stop, so that nothing counted goes unreported).
    fn check_lost(&mut self, now: bool) {
        self.last_check = Instant::now();
        let Ok(total) = self.lost.read() else {
            return;
        };
        let new = total.since(&self.reported);
        let due = now
            || self
                .last_report
                .is_none_or(|t| t.elapsed() >= LOST_REPORT_EVERY);
        if new.total() > 0 && due {
            self.output.report_lost(new);
            self.reported = total;
            self.last_report = Some(Instant::now());
        }
    }
}

/// CPU time the calling thread has used.
/// Lets a pass's buffer go back to a modest size after a flood.
fn keep<T>(buf: &mut Vec<T>) {
    const KEEP: usize = 1024;
    if buf.capacity() > KEEP {
        buf.shrink_to(KEEP);
    }
}

fn thread_cpu() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default()
}
