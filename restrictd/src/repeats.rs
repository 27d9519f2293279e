//! Allowed network events that repeat (one process connecting to one
//! destination over and over) are folded into counts, so that a flood of
//! them cannot outrun the system log.
//!
//! journald takes some 100 µs of CPU per entry on a small host: a process
//! making 50,000 connections a second to one address would otherwise fill
//! the network ring, and the session's share would keep its other events
//! out. Here the first `BURST` of a kind in each second are events as
//! before; later ones are counted, and the latest of them is written with
//! `repeats` = how many more it stands for, when the second is over (or the
//! session ends). Denials are folded in the kernel already (`DENIALS`).

use std::collections::HashMap;

use restrictd_common::{NetworkEvent, ACTION_OBSERVED};

/// Events of one kind written individually per window.
pub const BURST: u32 = 20;
/// The window, in ns of CLOCK_BOOTTIME.
pub const WINDOW_NS: u64 = 1_000_000_000;

/// What makes allowed events "the same": the session's record key, the
/// process, and the operation, protocol and destination.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Kind {
    key: u64,
    pid: u32,
    operation: u8,
    protocol: u8,
    version: u8,
    dst: [u8; 16],
    dst_port: u16,
}

struct Window {
    start_ns: u64,
    /// Events written in this window.
    written: u32,
    /// The latest event folded in, and how many were.
    held: Option<(NetworkEvent, u32)>,
}

#[derive(Default)]
pub struct AllowedRepeats {
    windows: HashMap<Kind, Window>,
}

impl AllowedRepeats {
    /// Takes an allowed network record: returns what to write now — the
    /// record itself, and the previous window's fold if this record starts
    /// a new one (stamped at this record's time, just before it).
    pub fn admit(&mut self, ev: NetworkEvent) -> (Option<NetworkEvent>, Option<NetworkEvent>) {
        if ev.action != ACTION_OBSERVED || ev.repeats != 0 {
            return (None, Some(ev));
        }
        let t = ev.header.boot_ns;
        let kind = Kind {
            key: ev.header.cgroup_id,
            pid: ev.header.pid,
            operation: ev.operation,
            protocol: ev.protocol,
            version: ev.version,
            dst: ev.dst_addr,
            dst_port: ev.dst_port,
        };
        let w = self.windows.entry(kind).or_insert(Window {
            start_ns: t,
            written: 0,
            held: None,
        });
        let mut fold = None;
        if t.saturating_sub(w.start_ns) >= WINDOW_NS {
            fold = w.held.take().map(|h| folded(h, t.saturating_sub(1)));
            w.start_ns = t;
            w.written = 0;
        }
        if w.written < BURST {
            w.written += 1;
            return (fold, Some(ev));
        }
        let n = w.held.as_ref().map_or(0, |(_, n)| *n);
        w.held = Some((ev, n + 1));
        (fold, None)
    }

    /// The folds of windows over by `now`, stamped `now`; those windows
    /// are forgotten. `skip`: record keys whose folds wait for their
    /// session's end.
    pub fn due(&mut self, now: u64, skip: impl Fn(u64) -> bool) -> Vec<NetworkEvent> {
        self.take(now, |k, w| {
            !skip(k.key) && now.saturating_sub(w.start_ns) >= WINDOW_NS
        })
    }

    /// The folds of `keys`' windows (sessions ending), over or not.
    pub fn of_keys(&mut self, now: u64, keys: &[u64]) -> Vec<NetworkEvent> {
        self.take(now, |k, _| keys.contains(&k.key))
    }

    /// Every fold (the daemon stops).
    pub fn all(&mut self, now: u64) -> Vec<NetworkEvent> {
        self.take(now, |_, _| true)
    }

    /// The folds of the windows `which` picks, stamped `now`, in time order;
    /// those windows are forgotten.
    fn take(&mut self, now: u64, which: impl Fn(&Kind, &Window) -> bool) -> Vec<NetworkEvent> {
        let mut out = Vec::new();
        self.windows.retain(|k, w| {
            if !which(k, w) {
                return true;
            }
            if let Some(h) = w.held.take() {
                out.push(folded(h, now));
            }
            false
        });
        out.sort_by_key(|e| e.header.boot_ns);
        out
    }
}

/// The latest folded event, standing for `n` events: itself and `n - 1`
/// more, reported at `at`.
fn folded((mut ev, n): (NetworkEvent, u32), at: u64) -> NetworkEvent {
    ev.repeats = n - 1;
    ev.header.boot_ns = at;
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(key: u64, pid: u32, port: u16, t: u64) -> NetworkEvent {
        let mut ev = NetworkEvent::default();
        ev.header.cgroup_id = key;
        ev.header.pid = pid;
        ev.header.boot_ns = t;
        ev.dst_port = port;
        ev.version = 4;
        ev.protocol = 6;
        ev
    }

    /// Every event is accounted for: written, or counted in a fold.
    #[test]
    fn a_flood_is_folded_into_counts_that_add_up_and_other_kinds_pass() {
        let mut r = AllowedRepeats::default();
        let mut total = 0u64;
        let mut written = 0;
        let mut count = |(fold, ev): (Option<NetworkEvent>, Option<NetworkEvent>)| {
            for e in fold.into_iter().chain(ev) {
                total += 1 + e.repeats as u64;
                written += 1;
            }
        };
        // 1,000 connects a second for 2.5 s, to one destination.
        for i in 0..2_500u64 {
            count(r.admit(connect(7, 100, 443, i * 1_000_000)));
            // Another destination in the middle of it is written at once.
            if i == 1_200 {
                let (fold, ev) = r.admit(connect(7, 100, 80, i * 1_000_000));
                assert!(fold.is_none() && ev.is_some());
                count((fold, ev));
            }
        }
        for e in r.of_keys(u64::MAX, &[7]) {
            count((None, Some(e)));
        }
        assert_eq!(total, 2_501);
        // Three windows: BURST each and one fold for the first two, the
        // third's fold at the end; and the other destination.
        assert_eq!(written, 3 * (BURST as usize + 1) + 1);
    }

    #[test]
    fn denials_and_other_sessions_are_not_folded_here() {
        let mut r = AllowedRepeats::default();
        for i in 0..100 {
            let mut d = connect(1, 1, 22, i);
            d.action = restrictd_common::ACTION_DENIED;
            assert!(r.admit(d).1.is_some());
        }
        for i in 0..BURST as u64 {
            assert!(r.admit(connect(1, 1, 22, i)).1.is_some());
            assert!(r.admit(connect(2, 1, 22, i)).1.is_some());
        }
        assert!(r.admit(connect(1, 1, 22, 50)).1.is_none());
        // A window still open is not due; its session's end takes it.
        assert!(r.due(100, |_| false).is_empty());
        assert!(r.due(WINDOW_NS, |k| k == 1).is_empty());
        let end = r.of_keys(WINDOW_NS, &[1]);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].repeats, 0);
    }
}
