//! `SESSION_SLOTS`, the direct-mapped copy of `SESSIONS` that the programs
//! read before the hash (see `restrictd_common::SessionSlot`), written
//! through a shared mapping of the array with the slot's sequence lock.

use std::{
    os::fd::AsFd,
    sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst},
};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData};
use restrictd_common::{slot_index, SessionEntry, SessionSlot, SESSION_SLOTS};

// The mapping is read as an array of `SessionSlot`s: the kernel lays an
// array map's values out at a stride of their size rounded up to 8.
const _: () = assert!(std::mem::size_of::<SessionSlot>().is_multiple_of(8));

pub struct SessionSlots {
    /// Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
    base: *mut SessionSlot,
    len: usize,
}

// SAFETY: the mapping is owned by this value and written only through
// `&mut self`; the kernel's readers follow the sequence lock.
unsafe impl Send for SessionSlots {}

impl SessionSlots {
    pub fn new(map: Map) -> Result<SessionSlots> {
        let Map::Array(map) = map else {
            bail!("BPF map SESSION_SLOTS is not an array");
        };
        let len = SESSION_SLOTS as usize * std::mem::size_of::<SessionSlot>();
        // SAFETY: a shared mapping of an mmapable array map's values, as
        // long as the map's fd; checked for failure below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd()),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping BPF map SESSION_SLOTS");
        }
        Ok(SessionSlots {
            _map: map,
            base: base.cast(),
            len,
        })
    }

    fn slot(&self, cgroup_id: u64) -> *mut SessionSlot {
        // SAFETY: slot_index is below SESSION_SLOTS, the mapping's length.
        unsafe { self.base.add(slot_index(cgroup_id) as usize) }
    }

    /// Puts `cgroup_id`'s entry in its slot, unless another cgroup holds
    /// the slot (it is then found in `SESSIONS` alone).
    pub fn set(&mut self, cgroup_id: u64, entry: SessionEntry) {
        let s = self.slot(cgroup_id);
        let held = self.id(s);
        if held == 0 || held == cgroup_id {
            self.write(s, cgroup_id, entry);
        }
    }

    /// Empties `cgroup_id`'s slot if it holds it.
    pub fn clear(&mut self, cgroup_id: u64) {
        let s = self.slot(cgroup_id);
        if self.id(s) == cgroup_id {
            self.write(s, 0, SessionEntry::default());
        }
    }

    /// Empties every slot, then copies `sessions` in: what a daemon does on
    /// start, since a previous one may have died between writing
    /// `SESSIONS` and the slot.
    pub fn rebuild(&mut self, sessions: impl IntoIterator<Item = (u64, SessionEntry)>) {
        for i in 0..SESSION_SLOTS as usize {
            // SAFETY: i is below the mapping's length in slots.
            let s = unsafe { self.base.add(i) };
            if self.id(s) != 0 {
                self.write(s, 0, SessionEntry::default());
            }
        }
        for (id, entry) in sessions {
            self.set(id, entry);
        }
    }

    fn id(&self, s: *mut SessionSlot) -> u64 {
        // SAFETY: s points into the mapping; 8-byte aligned.
        unsafe { AtomicU64::from_ptr(&raw mut (*s).cgroup_id) }.load(SeqCst)
    }

    /// The sequence lock's write side: odd, the fields, even.
    fn write(&mut self, s: *mut SessionSlot, cgroup_id: u64, e: SessionEntry) {
        // SAFETY: s points into the mapping, whose fields are aligned for
        // their atomic types; the kernel reads them concurrently, so they are
        // written only as atomics.
        unsafe {
            let seq = AtomicU64::from_ptr(&raw mut (*s).seq);
            seq.fetch_add(1, SeqCst);
            AtomicU64::from_ptr(&raw mut (*s).cgroup_id).store(cgroup_id, SeqCst);
            let entry = &raw mut (*s).entry;
            AtomicU32::from_ptr(&raw mut (*entry).policy_id).store(e.policy_id, SeqCst);
            AtomicU32::from_ptr(&raw mut (*entry).flags).store(e.flags, SeqCst);
            AtomicU32::from_ptr(&raw mut (*entry).disk_filter).store(e.disk_filter, SeqCst);
            seq.fetch_add(1, SeqCst);
        }
    }
}

impl Drop for SessionSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
