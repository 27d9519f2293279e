//! Ending sessions and a user's processes for the session controls and
//! locks. A session ends by killing its processes except its leader
//! (sshd's `[priv]`), which then closes the login through PAM as at any
//! logout; the cgroup is frozen meanwhile, so nothing forks away from the
//! kill. A user's processes elsewhere on the host are killed by the uid
//! in one `kill(-1)` (which the kernel runs under its task list lock, so a
//! fork cannot outrun it), then by the audit login uid (`su`, `sudo`).

use std::{
    collections::HashSet,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::cgroup::{Cgroup, Pidfd};

/// Writes `message` to each terminal (the user sees why their session
/// ends, or that it is about to). Best effort: a terminal may be gone.
pub fn tell(ptys: &[std::path::PathBuf], message: &str) {
    for p in ptys {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(p);
        if let Ok(mut f) = opened {
            let _ = f.write_all(format!("\r\n\x07restrictd: {message}\r\n").as_bytes());
        }
    }
}

/// Kills every process of the session cgroup but `leader`; returns how
/// many it killed. Waits (at most `timeout`) for them to be gone.
pub fn end_session(cgroup: &Cgroup, leader: u32, timeout: Duration) -> Result<usize> {
    let frozen = cgroup.freeze(true).is_ok();
    let deadline = Instant::now() + timeout;
    let mut killed = HashSet::new();
    let result = loop {
        let pids = match cgroup.pids() {
            Ok(p) => p,
            Err(_) if !cgroup.path.exists() => break Ok(()),
            Err(e) => break Err(e),
        };
        let rest: Vec<u32> = pids.into_iter().filter(|p| *p != leader).collect();
        if rest.is_empty() {
            break Ok(());
        }
        for pid in rest {
            if let Ok(p) = Pidfd::open(pid) {
                if p.kill().is_ok() {
                    killed.insert(pid);
                }
            }
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "cgroup {} still has processes after {timeout:?}",
                cgroup.path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Descendant cgroups (a user's own) were frozen and emptied alike.
    if frozen {
        let _ = cgroup.freeze(false);
    }
    result.map(|()| killed.len())
}

/// Kills every process whose real, effective or saved uid is `uid` (a
/// forked child takes the uid and signals all it may, `kill(-1)`), then
/// every other process whose uid or audit login uid is `uid`, except
/// `spare` and sshd's privileged processes (session leaders, and those of
/// refused logins: they end their connections themselves once their
/// children are gone, and a refused one first tells the user why).
/// Returns how many processes it found to kill.
pub fn kill_user(uid: u32, spare: &HashSet<u32>) -> usize {
    if uid == 0 {
        return 0;
    }
    let me = std::process::id();
    let victims = || -> Vec<u32> {
        user_processes(Path::new("/proc"), uid)
            .into_iter()
            .filter(|p| *p != me && !spare.contains(p) && !is_sshd_monitor(*p))
            .collect()
    };
    let found = victims();
    if found.is_empty() {
        return 0;
    }
    kill_as(uid);
    for pid in victims() {
        if let Ok(p) = Pidfd::open(pid) {
            let _ = p.kill();
        }
    }
    found.len()
}

/// A root process running sshd (`sshd`, or `sshd-session` since OpenSSH
/// 9.8): the privileged half of a login, which carries the user's audit
/// login uid.
fn is_sshd_monitor(pid: u32) -> bool {
    let root = uids_of(Path::new(&format!("/proc/{pid}"))).first() == Some(&0);
    root && std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|e| {
            e.file_name()
                .map(|n| n.to_string_lossy().starts_with("sshd"))
        })
        .unwrap_or(false)
}

/// `kill(-1, SIGKILL)` with the credentials of `uid`.
fn kill_as(uid: u32) {
    // SAFETY: the child runs only async-signal-safe calls (setresuid,
    // kill, _exit) and never returns into Rust code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            if libc::setresuid(uid, uid, uid) != 0 {
                libc::_exit(1);
            }
            libc::kill(-1, libc::SIGKILL);
            libc::_exit(0);
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(e) => log::error!("killing the processes of uid {uid}: fork: {e}"),
    }
}

/// The real, effective, saved and filesystem uids of the process whose
/// /proc directory is `dir` (the `Uid:` line of its status), in that order.
fn uids_of(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| {
                u.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Processes (by pid) whose real, effective, saved or filesystem uid, or
/// audit login uid, is `uid`.
pub fn user_processes(proc: &Path, uid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(proc) else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = e.path();
        let by_uid = uids_of(&dir).contains(&uid);
        let by_login = std::fs::read_to_string(dir.join("loginuid"))
            .ok()
            .is_some_and(|l| l.trim() == uid.to_string());
        if by_uid || by_login {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_found_by_any_uid_and_by_login_uid() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |pid: u32, uids: &str, login: &str| {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir(&d).unwrap();
            std::fs::write(
                d.join("status"),
                format!("Name:\tx\nUid:\t{uids}\nGid:\t0\t0\t0\t0\n"),
            )
            .unwrap();
            std::fs::write(d.join("loginuid"), login).unwrap();
        };
        mk(10, "1001\t1001\t1001\t1001", "4294967295");
        mk(11, "0\t0\t1001\t0", "4294967295");
        mk(12, "0\t0\t0\t0", "1001");
        mk(13, "1002\t1002\t1002\t1002", "1002");
        std::fs::create_dir(dir.path().join("self")).unwrap();
        let mut got = user_processes(dir.path(), 1001);
        got.sort();
        assert_eq!(got, vec![10, 11, 12]);
    }
}
