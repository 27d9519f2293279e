//! Names of the programs processes run, for records that carry only the
//! program's inode (network and disk records: walking the program's path
//! in the kernel on every connect would cost more than the connect). A
//! command record carries both the inode and the real path the kernel
//! walked, so every program started in a session is named from there; one
//! started before (sshd itself) is named from `/proc/PID/exe` while the
//! process runs, if that is still the same file.

use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

/// Programs remembered; the oldest is forgotten first.
const CAPACITY: usize = 4096;
/// A program `/proc` could not name is not asked about again for this long
/// (each event of it would cost two system calls otherwise).
const RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct ExeNames {
    /// (kernel dev_t, inode) -> real path, and the `EXE_*` flags that
    /// qualify the path (not the process: `EXE_USER_MOUNT_NS`).
    names: HashMap<(u32, u64), (String, u32)>,
    order: VecDeque<(u32, u64)>,
    /// Programs `/proc` could not name, and when.
    unnamed: HashMap<(u32, u64), Instant>,
}

impl ExeNames {
    /// The program with this inode on this device is at `path`, as
    /// `flags` qualify it (`EXE_USER_MOUNT_NS`; other bits are dropped).
    pub fn learn(&mut self, dev: u32, ino: u64, path: &str, flags: u32) {
        if ino == 0 || path.is_empty() {
            return;
        }
        let flags = flags & restrictd_common::EXE_USER_MOUNT_NS;
        // Nearly every exec runs a program already known: no copy then.
        if self
            .names
            .get(&(dev, ino))
            .is_some_and(|(p, f)| p == path && *f == flags)
        {
            return;
        }
        if self
            .names
            .insert((dev, ino), (path.to_string(), flags))
            .is_none()
        {
            self.order.push_back((dev, ino));
            if self.order.len() > CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.names.remove(&old);
                }
            }
        }
    }

    /// The path of the program `pid` ran (inode `ino` on `dev`), if
    /// known, with the flags it was learned with.
    pub fn name(&mut self, pid: u32, dev: u32, ino: u64) -> Option<(String, u32)> {
        if ino == 0 {
            return None;
        }
        if let Some(p) = self.names.get(&(dev, ino)) {
            return Some(p.clone());
        }
        if self
            .unnamed
            .get(&(dev, ino))
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
        {
            return None;
        }
        let Some(target) = from_proc(pid, dev, ino) else {
            if self.unnamed.len() >= CAPACITY {
                self.unnamed.clear();
            }
            self.unnamed.insert((dev, ino), Instant::now());
            return None;
        };
        let target = target.to_string_lossy();
        let path = target.strip_suffix(" (deleted)").unwrap_or(&target);
        self.learn(dev, ino, path, 0);
        Some((path.to_string(), 0))
    }
}

/// `/proc/PID/exe` if it is the program with this inode on this device
/// (the process may have exited, or run another program now).
fn from_proc(pid: u32, dev: u32, ino: u64) -> Option<std::path::PathBuf> {
    let link = format!("/proc/{pid}/exe");
    let md = std::fs::metadata(&link).ok()?;
    if md.ino() != ino || md.dev() != user_dev(dev) {
        return None;
    }
    std::fs::read_link(&link).ok()
}

/// A kernel `dev_t` (major << 20 | minor) as `stat` reports it.
fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

/// `stat`'s `st_dev` as the kernel keeps it (`super_block.s_dev`: major << 20 | minor).
pub fn kernel_dev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | libc::minor(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_program_is_named_only_if_it_is_the_same_file() {
        let me = std::fs::metadata("/proc/self/exe").unwrap();
        let kdev = kernel_dev(me.dev());
        let pid = std::process::id();
        let mut n = ExeNames::default();
        let real = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(
            n.name(pid, kdev, me.ino()),
            Some((real.to_str().unwrap().to_string(), 0))
        );
        // Another inode: not this process's program.
        let mut fresh = ExeNames::default();
        assert_eq!(fresh.name(pid, kdev, me.ino() + 1), None);
        // Learned names come first, and the oldest go beyond the capacity.
        n.learn(1, 5, "/usr/bin/x", 0);
        assert_eq!(n.name(0, 1, 5), Some(("/usr/bin/x".to_string(), 0)));
        // The path's qualifier is kept with it; the process's are not.
        let ns = restrictd_common::EXE_USER_MOUNT_NS;
        n.learn(1, 6, "/usr/bin/ls", ns | restrictd_common::EXE_UNLINKED);
        assert_eq!(n.name(0, 1, 6), Some(("/usr/bin/ls".to_string(), ns)));
        for i in 0..CAPACITY as u64 {
            n.learn(2, 100 + i, "/y", 0);
        }
        assert_eq!(n.name(0, 1, 5), None);
    }
}
