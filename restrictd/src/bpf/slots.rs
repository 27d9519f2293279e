//! The two arrays the daemon writes through a shared mapping while the
//! programs read them: `SESSION_SLOTS`, the direct-mapped copy of
//! `SESSIONS` that the programs read before the hash (see
//! `restrictd_common::SessionSlot`), written with the slot's sequence lock;
//! and `PRESENCE`, the bitmaps that let them skip both hashes
//! (`restrictd_common::Presence`).

use std::{
    os::fd::AsFd,
    sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst},
};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData};
use restrictd_common::{
    presence_bit, slot_index, Presence, SessionEntry, SessionSlot, PRESENCE_WORDS, SESSION_SLOTS,
};

// The mapping is read as an array of `SessionSlot`s: the kernel lays an
// array map's values out at a stride of their size rounded up to 8.
const _: () = assert!(std::mem::size_of::<SessionSlot>().is_multiple_of(8));

/// A shared, writable mapping of an mmapable array map's values.
struct Mapping {
    /// Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(map: Map, name: &str, len: usize) -> Result<Mapping> {
        let Map::Array(map) = map else {
            bail!("BPF map {name} is not an array");
        };
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
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mapping BPF map {name}"));
        }
        Ok(Mapping {
            _map: map,
            base: base.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

// SAFETY: each mapping is owned by one value and written only through
// `&mut self`; the kernel's readers follow the protocol of its map.
unsafe impl Send for Mapping {}

pub struct SessionSlots {
    mapping: Mapping,
}

impl SessionSlots {
    pub fn new(map: Map) -> Result<SessionSlots> {
        let len = SESSION_SLOTS as usize * std::mem::size_of::<SessionSlot>();
        Ok(SessionSlots {
            mapping: Mapping::new(map, "SESSION_SLOTS", len)?,
        })
    }

    fn base(&self) -> *mut SessionSlot {
        self.mapping.base.cast()
    }

    fn slot(&self, cgroup_id: u64) -> *mut SessionSlot {
        // SAFETY: slot_index is below SESSION_SLOTS, the mapping's length.
        unsafe { self.base().add(slot_index(cgroup_id) as usize) }
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
            let s = unsafe { self.base().add(i) };
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

/// `PRESENCE[0]`, through its mapping.
pub struct PresenceBits {
    mapping: Mapping,
}

/// Which bitmap of `Presence` a key goes in.
#[derive(Clone, Copy)]
pub enum Keyed {
    Cgroup,
    Uid,
}

impl PresenceBits {
    pub fn new(map: Map) -> Result<PresenceBits> {
        // The kernel maps whole pages.
        let len = std::mem::size_of::<Presence>().next_multiple_of(4096);
        Ok(PresenceBits {
            mapping: Mapping::new(map, "PRESENCE", len)?,
        })
    }

    fn word(&self, keyed: Keyed, word: usize) -> &AtomicU64 {
        let p: *mut Presence = self.mapping.base.cast();
        // SAFETY: word < PRESENCE_WORDS (callers), inside the mapping, and
        // 8-aligned; the kernel reads these words concurrently, so they are
        // accessed only as atomics.
        unsafe {
            let words = match keyed {
                Keyed::Cgroup => &raw mut (*p).cgroups,
                Keyed::Uid => &raw mut (*p).uids,
            };
            AtomicU64::from_ptr(words.cast::<u64>().add(word))
        }
    }

    /// Sets `key`'s bit: before the key goes into its map.
    pub fn mark(&mut self, keyed: Keyed, key: u64) {
        let (word, bit) = presence_bit(key);
        self.word(keyed, word).fetch_or(bit, SeqCst);
    }

    /// Makes the bitmaps exactly those of `cgroups` and `uids`, found by a
    /// scan of the maps that began after the kernel's generation was
    /// `kernel_generation`, and tells the programs they cover it.
    pub fn replace(
        &mut self,
        kernel_generation: u64,
        cgroups: impl IntoIterator<Item = u64>,
        uids: impl IntoIterator<Item = u64>,
    ) {
        for (keyed, keys) in [
            (Keyed::Cgroup, cgroups.into_iter().collect::<Vec<_>>()),
            (Keyed::Uid, uids.into_iter().collect()),
        ] {
            let mut want = [0u64; PRESENCE_WORDS];
            for k in keys {
                let (word, bit) = presence_bit(k);
                want[word] |= bit;
            }
            for (i, w) in want.iter().enumerate() {
                self.word(keyed, i).store(*w, SeqCst);
            }
        }
        // Last: until now the programs read the maps when they knew of a
        // kernel insertion, and the words above already held every key.
        let p: *mut Presence = self.mapping.base.cast();
        // SAFETY: inside the mapping, 8-aligned, accessed as an atomic.
        unsafe { AtomicU64::from_ptr(&raw mut (*p).kernel_generation) }
            .store(kernel_generation, SeqCst);
    }

    /// The kernel generation the bitmaps cover.
    pub fn covers(&self) -> u64 {
        let p: *mut Presence = self.mapping.base.cast();
        // SAFETY: as in `replace`.
        unsafe { AtomicU64::from_ptr(&raw mut (*p).kernel_generation) }.load(SeqCst)
    }
}
