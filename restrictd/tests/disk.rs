//! session.disk: file opens of a session, recorded in the kernel with
//! absolute paths, filtered by path prefix and rate-limited per session.

mod common;
use common::*;

use std::path::Path;

const PYTHON: &str = "/usr/bin/python3";

fn disk(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|e| e["event"] == "session.disk")
        .collect()
}

/// Disk events whose path is under `dir`.
fn under<'a>(events: &'a [serde_json::Value], dir: &Path) -> Vec<&'a serde_json::Value> {
    let prefix = format!("{}/", dir.display());
    disk(events)
        .into_iter()
        .filter(|e| e["path"].as_str().unwrap().starts_with(&prefix))
        .collect()
}

fn end(events: &[serde_json::Value]) -> &serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "session.end")
        .expect("session.end")
}

#[test]
fn every_open_is_recorded_once_with_an_absolute_path() {
    let sb = Sandbox::new();
    let d = sb.dir.path().join("files");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    // Events name files by their real path.
    let d = std::fs::canonicalize(d).unwrap();
    std::fs::write(d.join("a.txt"), "a").unwrap();
    std::fs::write(d.join("sub/b.txt"), "b").unwrap();
    std::os::unix::fs::symlink(d.join("a.txt"), d.join("link")).unwrap();
    // Absolute read, a read through a symlink, relative read after cd,
    // create for writing, a missing file, openat(2) relative to a directory
    // fd, and a grandchild's open.
    let script = format!(
        "cat {d}/a.txt >/dev/null; cat {d}/sub/../link >/dev/null; cd {d}/sub && cat b.txt >/dev/null; \
         echo x > {d}/new.txt; cat {d}/missing 2>/dev/null; \
         {PYTHON} -c 'import os; fd=os.open(\"{d}/sub\", os.O_RDONLY); os.close(os.open(\"b.txt\", os.O_RDONLY, dir_fd=fd))'; \
         sh -c 'cat ./b.txt >/dev/null'; echo ready; read _; exit 0",
        d = d.display()
    );
    let mut child = sb
        .run_cmd(None, &["/bin/sh", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    read_until(child.stdout.as_mut().unwrap(), "ready");
    // The same file opened by a process outside the session, while the
    // session's programs are attached and it is running.
    std::fs::read(d.join("a.txt")).unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");

    let ev = sb.events();
    let mine = under(&ev, &d);
    let at = |p: &str| -> Vec<&serde_json::Value> {
        let want = d.join(p).display().to_string();
        mine.iter().copied().filter(|e| e["path"] == want).collect()
    };
    // Directly and through the symlink.
    let a = at("a.txt");
    assert_eq!(a.len(), 2, "{mine:#?}");
    assert!(at("link").is_empty());
    let a = a[0];
    assert_eq!(a["code"], "T4001I");
    assert_eq!(a["program"], "cat");
    assert_eq!(a["return_code"], 3, "cat's new file descriptor");
    assert_eq!(a["flags"].as_u64().unwrap() & 0o3, 0, "read only");
    assert_eq!(a["unix_uid"], 0);
    assert!(a["pid"].as_u64().unwrap() > 0 && a["cgroup_id"].as_u64().unwrap() > 0);
    assert!(a["sid"].is_string() && a["ei"].is_u64() && a["time"].is_string());

    // cat b.txt (cwd), os.open(dir_fd=) and the grandchild's ./b.txt.
    let b = at("sub/b.txt");
    assert_eq!(b.len(), 3, "{mine:#?}");
    assert_eq!(
        b.iter().filter(|e| e["program"] == "python3").count(),
        1,
        "{b:#?}"
    );

    let new = at("new.txt");
    assert_eq!(new.len(), 1, "{mine:#?}");
    let flags = new[0]["flags"].as_u64().unwrap();
    assert_eq!(flags & 0o3, 1, "O_WRONLY");
    assert_ne!(flags & 0o100, 0, "O_CREAT");
    assert_ne!(flags & 0o1000, 0, "O_TRUNC");
    assert_eq!(new[0]["program"], "sh");

    let missing = at("missing");
    assert_eq!(missing.len(), 1, "{mine:#?}");
    assert_eq!(missing[0]["return_code"], -2, "ENOENT");
    // Named by the kernel's copy of the path where the kernel has kprobes
    // (the VM tests attack that); else by the caller's memory, and flagged.
    let kprobes = std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists();
    assert_eq!(
        missing[0]["path_from_caller"].as_bool().unwrap_or(false),
        !kprobes,
        "{:#?}",
        missing[0]
    );
    // A successful open is named by the file it opened: never flagged.
    assert!(mine
        .iter()
        .filter(|e| e["return_code"].as_i64().unwrap() >= 0)
        .all(|e| e.get("path_from_caller").is_none()));

    // python's open of the directory itself.
    assert_eq!(at("sub").len(), 1, "{mine:#?}");
    // Nothing else under the directory: the outside read left no event.
    assert_eq!(mine.len(), 8, "{mine:#?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("lost"),
        "{out:?}"
    );
    // Default filter: /dev and /proc are not recorded (`cat` opened
    // /dev/null above, and every program start reads /proc or /dev).
    assert!(!disk(&ev).is_empty());
    assert!(disk(&ev).iter().all(|e| {
        let p = e["path"].as_str().unwrap();
        !p.starts_with("/dev/") && !p.starts_with("/proc/")
    }));
    assert_eq!(end(&ev)["disk_events_dropped"], 0);
}

#[test]
fn prefix_filters_choose_what_is_recorded() {
    let base = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(base.path()).unwrap();
    let d = real.as_path();
    std::fs::create_dir_all(d.join("keep/skip/again")).unwrap();
    std::fs::create_dir_all(d.join("keepnot")).unwrap();
    for f in ["keep/1", "keep/skip/2", "keep/skip/again/3", "keepnot/4"] {
        std::fs::write(d.join(f), f).unwrap();
    }
    let cfg = format!(
        "enhanced_recording:\n  disk_always: []\n  disk_include: [\"{k}\", \"{k}/skip/again\"]\n  disk_exclude: [\"{k}/skip\"]\n",
        k = d.join("keep").display()
    );
    let sb = Sandbox::with_config(&cfg);
    let script = format!(
        "cd {d} && cat keep/1 keep/skip/2 keep/skip/again/3 keepnot/4 /etc/hostname >/dev/null",
        d = d.display()
    );
    let out = sb.run(None, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let ev = sb.events();
    let mut paths: Vec<String> = disk(&ev)
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            d.join("keep/1").display().to_string(),
            d.join("keep/skip/again/3").display().to_string()
        ]
    );
}

#[test]
fn the_rate_limit_drops_and_counts_the_excess() {
    let base = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(base.path()).unwrap();
    let d = real.as_path();
    std::fs::write(d.join("f"), "f").unwrap();
    let cfg = format!(
        "enhanced_recording:\n  disk_always: []\n  disk_include: [\"{}\"]\n  disk_rate_limit: 25\n",
        d.display()
    );
    let sb = Sandbox::with_config(&cfg);
    // 300 opens in one process, well within a second.
    let script = format!("for _ in range(300): open('{}/f').close()", d.display());
    let out = sb.run(None, &[PYTHON, "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let ev = sb.events();
    let recorded = disk(&ev).len() as u64;
    let dropped = end(&ev)["disk_events_dropped"].as_u64().unwrap();
    // One process: no race on the window, so the numbers are exact.
    assert_eq!(recorded + dropped, 300, "{recorded} + {dropped}");
    assert!((25..=50).contains(&recorded), "{recorded}");
    let sid = end(&ev)["sid"].as_str().unwrap().to_string();
    let reports = assert_ei_accounted(&ev, &sid);
    let reported: u64 = reports
        .iter()
        .map(|e| e["disk_events_dropped"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, dropped, "{reports:?}");

    // Without a limit, all 300.
    let cfg = format!(
        "enhanced_recording:\n  disk_always: []\n  disk_include: [\"{}\"]\n  disk_rate_limit: 0\n",
        d.display()
    );
    let sb = Sandbox::with_config(&cfg);
    let out = sb.run(None, &[PYTHON, "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let ev = sb.events();
    assert_eq!(disk(&ev).len(), 300);
    assert_eq!(end(&ev)["disk_events_dropped"], 0);
}

#[test]
fn a_full_disk_buffer_is_counted_and_reported() {
    let base = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(base.path()).unwrap();
    let d = real.as_path();
    let long = d.join("x".repeat(200));
    std::fs::write(&long, "f").unwrap();
    let cfg = format!(
        "enhanced_recording:\n  disk_always: []\n  disk_include: [\"{}\"]\n  disk_rate_limit: 0\n  disk_buffer_size: 1\n",
        d.display()
    );
    let sb = Sandbox::with_config(&cfg);
    // A one-page buffer holds some fifteen 260-byte records; 5000 opens in a
    // tight loop outrun the reader.
    let script = format!("for _ in range(5000): open('{}').close()", long.display());
    let out = sb.run(None, &[PYTHON, "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let ev = sb.events();
    let recorded = disk(&ev).len();
    // Over half full, the session is held to its share; what still finds
    // the buffer full is lost. Both are counted, and reported as the
    // session's with their ei numbers.
    let sid = end(&ev)["sid"].as_str().unwrap().to_string();
    let reports = assert_ei_accounted(&ev, &sid);
    let sum = |k: &str| -> usize {
        reports
            .iter()
            .map(|e| e[k].as_u64().unwrap() as usize)
            .sum()
    };
    let (lost, shed) = (sum("lost_disk"), sum("disk_events_dropped"));
    assert!(lost + shed > 0, "the buffer overflowed");
    assert_eq!(recorded + lost + shed, 5000, "{recorded} + {lost} + {shed}");
    assert_eq!(end(&ev)["lost_disk"].as_u64().unwrap() as usize, lost);
    assert_eq!(
        end(&ev)["disk_events_dropped"].as_u64().unwrap() as usize,
        shed
    );
    // Ring-full losses are also in the host-wide report.
    if lost > 0 {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!(" {lost} disk")), "{err}");
    }
}

#[test]
fn disabled_disk_recording_records_no_opens() {
    for cfg in [
        "enhanced_recording:\n  disk_events: false\n",
        "enhanced_recording:\n  enabled: false\n",
    ] {
        let sb = Sandbox::with_config(cfg);
        assert!(sb
            .run(None, &["/bin/cat", "/etc/hostname"])
            .status
            .success());
        assert!(disk(&sb.events()).is_empty(), "{cfg}");
    }
}

#[test]
fn opens_reach_the_journal_with_their_fields() {
    let sb = Sandbox::new();
    let f = std::fs::canonicalize(sb.dir.path())
        .unwrap()
        .join("journal-me");
    std::fs::write(&f, "x").unwrap();
    let journal = sb.dir.path().join("journal.json");
    let f_str = f.display().to_string();
    let run = sb.run_cmd(None, &["/bin/cat", &f_str]);
    let out = run_with_journald(&journal, &run);
    assert!(out.status.success(), "{out:?}");
    let entries = read_events(&journal);
    let j = entries
        .iter()
        .find(|j| j["EVENT"] == "session.disk" && j["PATH"] == f_str.as_str())
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(
        j["MESSAGE_ID"],
        restrictd::events::message_id("session.disk").unwrap()
    );
    assert_eq!(j["PRIORITY"], "6");
    assert_eq!(j["PROGRAM"], "cat");
    assert_eq!(j["RETURN_CODE"], "3", "cat's new file descriptor");
    assert!(j["FLAGS"].is_string() && j["SESSION_ID"].is_string());
    assert!(j["MESSAGE"]
        .as_str()
        .unwrap()
        .contains(&format!("opened {f_str} (read)")));
    let end = entries
        .iter()
        .find(|j| j["EVENT"] == "session.end")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(end["DISK_EVENTS_DROPPED"], "0");
}

#[test]
fn openat2_is_recorded_with_the_flags_from_its_open_how() {
    let sb = Sandbox::new();
    let f = std::fs::canonicalize(sb.dir.path())
        .unwrap()
        .join("via-openat2");
    std::fs::write(&f, "x").unwrap();
    // openat2(AT_FDCWD, path, &{O_WRONLY|O_APPEND, 0, 0}, 24): x86_64 syscall 437.
    let script = format!(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         how = (ctypes.c_uint64 * 3)(os.O_WRONLY | os.O_APPEND, 0, 0)\n\
         fd = libc.syscall(437, -100, b'{}', ctypes.byref(how), 24)\n\
         assert fd >= 0, ctypes.get_errno()\n\
         os.close(fd)\n",
        f.display()
    );
    let out = sb.run(None, &[PYTHON, "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let ev = sb.events();
    let path = f.display().to_string();
    let hits: Vec<_> = disk(&ev)
        .into_iter()
        .filter(|e| e["path"] == path.as_str())
        .collect();
    assert_eq!(hits.len(), 1, "{ev:?}");
    assert_eq!(
        hits[0]["flags"].as_u64().unwrap() & 0o2003,
        0o2001,
        "O_WRONLY|O_APPEND"
    );
    assert!(
        hits[0]["return_code"].as_i64().unwrap() >= 3,
        "a file descriptor"
    );
}
