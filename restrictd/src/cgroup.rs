//! cgroup v2: finding the hierarchy, and creating, emptying and removing the
//! per-session cgroups under restrictd's root.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Finds the cgroup v2 mount in /proc/self/mountinfo. On unified hosts that is
/// usually /sys/fs/cgroup; on hybrid ones /sys/fs/cgroup/unified.
pub fn find_cgroup2_mount() -> Result<PathBuf> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    parse_mountinfo(&info).context(
        "no cgroup2 filesystem is mounted; mount one (mount -t cgroup2 none /sys/fs/cgroup) or set cgroup_path",
    )
}

fn parse_mountinfo(info: &str) -> Option<PathBuf> {
    cgroup2_roots(info).next().map(|(path, _)| path)
}

/// The cgroup2 hierarchy roots in `info`, each with its superblock options.
fn cgroup2_roots(info: &str) -> impl Iterator<Item = (PathBuf, &str)> {
    info.lines().filter_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        let fstype = right.next()?;
        let super_opts = right.nth(1).unwrap_or("");
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        // A bind mount of a sub-cgroup (root != "/") is not the hierarchy's root.
        (fstype == "cgroup2" && root == "/")
            .then(|| (PathBuf::from(unescape_octal(mount_point)), super_opts))
    })
}

/// Whether moving a process into a cgroup of the hierarchy mounted at
/// `mount` waits for an RCU grace period: since 6.0 the kernel's
/// threadgroup lock is per-CPU by default, and its writer (every
/// cgroup.procs write) waits out a grace period unless another move just
/// did, several ms on an idle host, on every login. The mount option
/// `favordynmods` trades that wait for slightly dearer forks and exits.
/// True when the kernel offers the option and the mount does not use it.
pub fn moves_wait_for_grace_period(mount: &Path) -> bool {
    let offered = fs::read_to_string("/sys/kernel/cgroup/features")
        .is_ok_and(|f| f.lines().any(|l| l.trim() == "favordynmods"));
    offered && cgroup2_options(mount).is_some_and(|o| !o.split(',').any(|o| o == "favordynmods"))
}

/// The superblock options of the cgroup2 hierarchy mounted at `mount`
/// (`nsdelegate`, `favordynmods`, ...); None if none is mounted there.
pub fn cgroup2_options(mount: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    options_in(&info, mount).map(str::to_string)
}

fn options_in<'a>(info: &'a str, mount: &Path) -> Option<&'a str> {
    cgroup2_roots(info)
        .find(|(path, _)| path == mount)
        .map(|(_, opts)| opts)
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that `path` is the root of a cgroup v2 hierarchy.
pub fn check_cgroup2(path: &Path) -> Result<()> {
    let st = nix::sys::statfs::statfs(path)
        .with_context(|| format!("cgroup_path {}: cannot stat", path.display()))?;
    if st.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        bail!("cgroup_path {} is not a cgroup2 mount", path.display());
    }
    Ok(())
}

/// A cgroup directory and its id (the directory's inode number, which is what
/// `bpf_get_current_cgroup_id()` returns for processes in it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl Cgroup {
    pub fn open(path: &Path) -> Result<Cgroup> {
        let md = fs::metadata(path).with_context(|| format!("cgroup {}", path.display()))?;
        Ok(Cgroup {
            path: path.to_path_buf(),
            id: md.ino(),
        })
    }

    /// Creates `path` and any missing parents (mode 0755, root-owned, so that
    /// an unprivileged user can neither add processes nor make sub-cgroups).
    pub fn create_all(path: &Path) -> Result<Cgroup> {
        fs::create_dir_all(path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Cgroup::open(path)
    }

    /// Creates a fresh child; fails if it exists.
    pub fn create_child(&self, name: &str) -> Result<Cgroup> {
        let path = self.path.join(name);
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Cgroup::open(&path)
    }

    pub fn procs_path(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Moves a process (with all its threads) into this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(self.procs_path())
            .with_context(|| format!("opening {}", self.procs_path().display()))?;
        f.write_all(pid.to_string().as_bytes())
            .with_context(|| format!("moving pid {pid} into {}", self.path.display()))
    }

    pub fn pids(&self) -> Result<Vec<u32>> {
        let s = fs::read_to_string(self.procs_path())
            .with_context(|| format!("reading {}", self.procs_path().display()))?;
        Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// True while any process is in this cgroup or below it.
    pub fn populated(&self) -> Result<bool> {
        let s = fs::read_to_string(self.path.join("cgroup.events"))
            .with_context(|| format!("reading {}/cgroup.events", self.path.display()))?;
        Ok(s.lines().any(|l| l.trim() == "populated 1"))
    }

    /// SIGKILLs every process in the cgroup and below, and waits until it is
    /// empty. Uses cgroup.kill (Linux 5.14+), which also catches processes
    /// forking while it runs; falls back to killing pid by pid.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        let kill_file = self.path.join("cgroup.kill");
        let have_kill = match fs::write(&kill_file, "1") {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e).with_context(|| format!("writing {}", kill_file.display())),
        };
        let deadline = Instant::now() + timeout;
        while self.populated()? {
            if !have_kill {
                for pid in self.pids()? {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "cgroup {} still has processes after {:?}",
                    self.path.display(),
                    timeout
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Freezes (true) or thaws (false) every process in the cgroup and
    /// below (`cgroup.freeze`, Linux 5.2+): a frozen process cannot fork,
    /// and still dies of SIGKILL.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let f = self.path.join("cgroup.freeze");
        fs::write(&f, if frozen { "1" } else { "0" })
            .with_context(|| format!("writing {}", f.display()))
    }

    /// Removes the (empty) cgroup directory. A just-exited process may keep it
    /// busy for a moment, so EBUSY is retried briefly.
    pub fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing cgroup {}", self.path.display()))
                }
            }
        }
    }
}

/// Wakes a thread when a watched cgroup's `cgroup.events` changes (the
/// kernel notifies on "populated" going from 1 to 0, among others), so a
/// session ends when its last process exits rather than at the next poll.
pub struct CgroupWatch {
    inotify: nix::sys::inotify::Inotify,
}

impl CgroupWatch {
    pub fn new() -> Result<CgroupWatch> {
        let inotify = nix::sys::inotify::Inotify::init(nix::sys::inotify::InitFlags::IN_CLOEXEC)
            .context("inotify_init (watching session cgroups)")?;
        Ok(CgroupWatch { inotify })
    }

    /// Watches `cgroup`; the watch goes away with the directory.
    pub fn add(&self, cgroup: &Cgroup) -> Result<nix::sys::inotify::WatchDescriptor> {
        let path = cgroup.path.join("cgroup.events");
        self.inotify
            .add_watch(&path, nix::sys::inotify::AddWatchFlags::IN_MODIFY)
            .with_context(|| format!("watching {}", path.display()))
    }

    pub fn remove(&self, wd: nix::sys::inotify::WatchDescriptor) {
        // Gone with its directory already: nothing to do.
        let _ = self.inotify.rm_watch(wd);
    }

    /// Blocks until some watched cgroup changed.
    pub fn wait(&self) -> Result<()> {
        loop {
            match self.inotify.read_events() {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("reading inotify events"),
            }
        }
    }
}

/// A process held by a pidfd, so that its pid cannot be mistaken for a
/// later process's (pids are reused).
pub struct Pidfd {
    pub pid: u32,
    fd: std::os::fd::OwnedFd,
}

impl Pidfd {
    pub fn open(pid: u32) -> Result<Pidfd> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pidfd_open({pid})"));
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(Pidfd {
            pid,
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// A duplicate of this process's file descriptor `fd` (pidfd_getfd(2);
    /// needs the right to ptrace it).
    pub fn get_fd(&self, fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: pidfd_getfd(2) with our pidfd, a descriptor number and no
        // flags; it returns a new fd.
        let new = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.fd.as_raw_fd(), fd, 0) };
        if new < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new as i32) })
    }

    /// Sends SIGKILL to this very process (not to a later one with its pid).
    pub fn kill(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal(2) with our pidfd, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("killing pid {}", self.pid));
        }
        Ok(())
    }

    /// False once the process has exited.
    pub fn alive(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        // A pidfd is readable when its process has exited.
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// The process's cgroup v2 path (relative to the cgroup2 mount), read
    /// from /proc and checked to belong to this very process.
    pub fn cgroup(&self) -> Option<String> {
        let text = fs::read_to_string(format!("/proc/{}/cgroup", self.pid)).ok()?;
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))?
            .to_string();
        // Still alive after the read: the pid was not reused meanwhile.
        self.alive().then_some(rel)
    }
}

/// The cgroup that session cgroups are created under: `cgroup_path` (or the
/// detected mount) joined with `root_path`.
pub fn session_root(cgroup_path: Option<&Path>, root_path: &str) -> Result<Cgroup> {
    let mount = match cgroup_path {
        Some(p) => {
            check_cgroup2(p)?;
            p.to_path_buf()
        }
        None => find_cgroup2_mount()?,
    };
    Cgroup::create_all(&mount.join(root_path.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_mountinfo() {
        let hybrid = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            parse_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let bind_then_root = "\
40 24 0:30 /user.slice /mnt/x rw - cgroup2 cgroup2 rw
41 24 0:30 / /my\\040cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_mountinfo(bind_then_root),
            Some(PathBuf::from("/my cgroup"))
        );
        assert_eq!(parse_mountinfo("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn reads_a_mounts_superblock_options() {
        let info = "\
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,favordynmods,memory_recursiveprot
";
        assert_eq!(
            options_in(info, Path::new("/sys/fs/cgroup/unified")),
            Some("rw,nsdelegate")
        );
        assert_eq!(
            options_in(info, Path::new("/sys/fs/cgroup")),
            Some("rw,nsdelegate,favordynmods,memory_recursiveprot")
        );
        assert_eq!(options_in(info, Path::new("/mnt")), None);
    }
}
