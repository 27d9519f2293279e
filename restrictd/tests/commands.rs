//! session.command: every exec in a session, recorded in the kernel at exec
//! completion (or at the failed syscall's exit), nothing from outside.

mod common;
use common::*;

fn commands(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|e| e["event"] == "session.command")
        .collect()
}

fn argv(e: &serde_json::Value) -> Vec<String> {
    e["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_exec_in_the_session_is_recorded_once_with_its_fields() {
    let sb = Sandbox::new();
    let marker = format!("m{}", uuid::Uuid::new_v4().simple());
    // /bin/echo via sh -c, a grandchild via a nested sh, a failing exec,
    // a relative exec, and an exec with an empty environment.
    let script = format!(
        "cd /bin && /bin/echo {marker} one >/dev/null; \
         sh -c '/bin/echo {marker} grandchild >/dev/null'; \
         /nonexistent/{marker} 2>/dev/null; \
         ./sh -c 'exit 0' relative; ./no-such-{marker} 2>/dev/null; \
         env -i /bin/echo {marker} noenv >/dev/null; exit 0"
    );
    let out = sb.run(None, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let ev = sb.events();
    let cmds = commands(&ev);
    let sid = cmds[0]["sid"].as_str().unwrap();
    let with = |needle: &str| -> Vec<&serde_json::Value> {
        cmds.iter()
            .copied()
            .filter(|e| argv(e).iter().any(|a| a == needle))
            .collect()
    };

    let one = with("one");
    assert_eq!(one.len(), 1, "recorded once: {one:?}");
    let one = one[0];
    assert_eq!(one["code"], "T4000I");
    assert_eq!(one["path"], "/bin/echo");
    assert_eq!(one["program"], "echo");
    assert_eq!(argv(one), [marker.as_str(), "one"]);
    assert_eq!(one["argv0"], "/bin/echo");
    assert_eq!(one["return_code"], 0);
    assert_eq!(one["unix_uid"], 0);
    assert_eq!(one["sid"], sid);
    assert!(one.get("argv_truncated").is_none());
    let shell = cmds
        .iter()
        .find(|e| e["path"] == "/bin/sh" && e["return_code"] == 0)
        .unwrap();
    assert_eq!(one["ppid"], shell["pid"], "ppid is the session shell");

    let gc = with("grandchild");
    assert_eq!(gc.len(), 1);
    let inner_sh = cmds
        .iter()
        .find(|e| e["pid"] == gc[0]["ppid"] && e["program"] == "sh")
        .expect("the grandchild's parent, the inner sh, was recorded too");
    assert_eq!(inner_sh["ppid"], shell["pid"]);

    let failed: Vec<_> = cmds
        .iter()
        .filter(|e| e["path"].as_str().unwrap().starts_with("/nonexistent/"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["return_code"], -2, "ENOENT");
    assert_eq!(failed[0]["path"], format!("/nonexistent/{marker}"));

    let rel = with("relative");
    assert_eq!(rel.len(), 1);
    // Made absolute in the kernel against the process's cwd, resolved as
    // the kernel has it (/bin may be a link to /usr/bin); the process is
    // gone long before userspace sees the event.
    let bin = std::fs::canonicalize("/bin").unwrap();
    assert_eq!(rel[0]["path"], bin.join("sh").display().to_string());
    let rel_failed: Vec<_> = cmds
        .iter()
        .filter(|e| {
            e["return_code"] == -2
                && e["path"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/no-such-{marker}"))
        })
        .collect();
    assert_eq!(rel_failed.len(), 1, "{cmds:?}");
    assert_eq!(
        rel_failed[0]["path"],
        bin.join(format!("no-such-{marker}")).display().to_string()
    );

    let noenv: Vec<_> = with("noenv")
        .into_iter()
        .filter(|e| e["program"] == "echo")
        .collect();
    assert_eq!(noenv.len(), 1, "echo run by env -i, with no environment");
    assert_eq!(argv(noenv[0]), [marker.as_str(), "noenv"]);

    // One session, written in the order the kernel saw things (across the
    // command, disk and network rings): `ei` counts 0, 1, 2, ... and the
    // times never go back.
    let eis: Vec<u64> = ev.iter().map(|e| e["ei"].as_u64().unwrap()).collect();
    let times: Vec<&str> = ev.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(
        eis == (0..ev.len() as u64).collect::<Vec<_>>() && times.windows(2).all(|w| w[0] <= w[1]),
        "{eis:?}\n{}",
        ev.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn processes_outside_the_session_produce_nothing() {
    let sb = Sandbox::new();
    let marker = format!("m{}", uuid::Uuid::new_v4().simple());
    let mut session = sb
        .run_cmd(
            None,
            &["/bin/sh", "-c", "/bin/true inside; echo ready; read _"],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The session runs, so its programs are attached: execs from this
    // (outside) process now.
    read_until(session.stdout.as_mut().unwrap(), "ready");
    for _ in 0..5 {
        let st = std::process::Command::new("/bin/echo")
            .arg(&marker)
            .output()
            .unwrap();
        assert!(st.status.success());
    }
    use std::io::Write;
    session.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(session.wait().unwrap().success());
    let ev = sb.events();
    assert!(
        !ev.iter().any(|e| e.to_string().contains(&marker)),
        "{ev:?}"
    );
    assert_eq!(
        ev.iter().filter(|e| e["argv"][0] == "inside").count(),
        1,
        "{ev:?}"
    );
}

#[test]
fn long_argv_is_cut_at_the_limit_and_flagged_with_its_true_length() {
    let sb = Sandbox::with_config("enhanced_recording:\n  argv_limit: 1024\n");
    let long = "x".repeat(5000);
    let out = sb.run(None, &["/bin/echo", &long]);
    assert!(out.status.success());
    let ev = sb.events();
    let cmds = commands(&ev);
    let e = cmds.iter().find(|e| e["path"] == "/bin/echo").unwrap();
    assert_eq!(e["argv_truncated"], true);
    // "/bin/echo\0" + 5000 x + "\0"
    assert_eq!(e["argv_length"], 10 + 5000 + 1);
    // The first 1024 bytes: "/bin/echo\0" and 1014 x, cut mid-argument.
    assert_eq!(argv(e), ["x".repeat(1014)]);
}

#[test]
fn disabled_command_recording_records_no_commands() {
    let sb = Sandbox::with_config("enhanced_recording:\n  command_events: false\n");
    assert!(sb.run(None, &["/bin/true"]).status.success());
    assert!(commands(&sb.events()).is_empty());
    let sb = Sandbox::with_config("enhanced_recording:\n  enabled: false\n");
    assert!(sb.run(None, &["/bin/true"]).status.success());
    assert!(commands(&sb.events()).is_empty());
}

#[test]
fn a_full_buffer_is_counted_and_reported_and_normal_runs_lose_nothing() {
    // Normal: 200 execs, every one recorded, nothing reported lost.
    let sb = Sandbox::new();
    let out = sb.run(
        None,
        &[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 200 ]; do /bin/true $i; i=$((i+1)); done",
        ],
    );
    assert!(out.status.success());
    let n = commands(&sb.events())
        .iter()
        .filter(|e| e["path"] == "/bin/true")
        .count();
    assert_eq!(n, 200);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("lost"));

    // A one-page buffer and a writer that does not run (stopped): what
    // the buffer cannot take is counted and reported as the session's
    // loss, exactly, with the ei numbers it would have had.
    let sb =
        Sandbox::with_config("enhanced_recording:\n  command_buffer_size: 1\n  argv_limit: 1024\n");
    let dir = sb.dir.path().display().to_string();
    let script = format!(
        // Shell builtins only, so that the 200 execs are the only ones
        // while the writer is stopped.
        ": > {dir}/ready; while [ ! -e {dir}/go ]; do :; done; \
         i=0; while [ $i -lt 200 ]; do /bin/true $i; i=$((i+1)); done; : > {dir}/done; \
         while [ ! -e {dir}/end ]; do :; done"
    );
    let child = sb
        .run_cmd(None, &["/bin/sh", "-c", &script])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let wait = |f: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !sb.dir.path().join(f).exists() {
            assert!(std::time::Instant::now() < deadline, "no {f}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait("ready");
    nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).unwrap();
    std::fs::write(sb.dir.path().join("go"), "").unwrap();
    wait("done");
    nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT).unwrap();
    std::fs::write(sb.dir.path().join("end"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let ev = sb.events();
    let recorded = commands(&ev)
        .iter()
        .filter(|e| e["path"] == "/bin/true")
        .count();
    let sid = ev.iter().find(|e| e["event"] == "session.end").unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let reports = assert_ei_accounted(&ev, &sid);
    let sum = |k: &str| -> usize {
        reports
            .iter()
            .map(|e| e[k].as_u64().unwrap() as usize)
            .sum()
    };
    let (lost, shed) = (sum("lost_command"), sum("command_events_dropped"));
    assert!(recorded < 200, "the writer was stopped: {recorded}");
    assert_eq!(recorded + lost + shed, 200, "{recorded} + {lost} + {shed}");
}

#[test]
fn commands_reach_the_journal_with_their_fields() {
    let sb = Sandbox::new();
    let journal = sb.dir.path().join("journal.json");
    let run = sb.run_cmd(None, &["/bin/echo", "to-the-journal"]);
    let out = run_with_journald(&journal, &run);
    assert!(out.status.success(), "{out:?}");
    let entries = read_events(&journal);
    let j = entries
        .iter()
        .find(|j| j["EVENT"] == "session.command" && j["PATH"] == "/bin/echo")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(
        j["MESSAGE_ID"],
        restrictd::events::message_id("session.command").unwrap()
    );
    assert_eq!(j["PRIORITY"], "6");
    assert_eq!(j["PROGRAM"], "echo");
    assert_eq!(j["RETURN_CODE"], "0");
    assert_eq!(j["ARGV"], r#"["to-the-journal"]"#);
    assert!(j["PPID"].is_string() && j["PID"].is_string() && j["SESSION_ID"].is_string());
    assert!(j["MESSAGE"]
        .as_str()
        .unwrap()
        .contains("ran /bin/echo to-the-journal"));
}

/// A failed exec is recorded from its exit, with its path and argv as the
/// caller passed them, through execve and execveat alike: by the program
/// at every syscall's exit where opens are recorded (the default), and by
/// the exec exit tracepoints without it.
#[test]
fn failed_execs_are_recorded_with_their_argv_with_or_without_the_exit_program() {
    let script = r#"
import ctypes, os, sys
m = sys.argv[1]
ve = "/nonexistent/%s-ve" % m
try:
    os.execv(ve, [ve, "a1", "a2"])
except OSError:
    pass
libc = ctypes.CDLL(None, use_errno=True)
veat = ("/nonexistent/%s-veat" % m).encode()
argv = (ctypes.c_char_p * 4)(veat, b"b1", b"b2", None)
envp = (ctypes.c_char_p * 1)(None)
# execveat(AT_FDCWD, path, argv, envp, 0)
r = libc.syscall(322, -100, veat, argv, envp, 0)
assert r == -1 and ctypes.get_errno() == 2, (r, ctypes.get_errno())
"#;
    for extra in ["", "enhanced_recording:\n  disk_events: false\n"] {
        let sb = Sandbox::with_config(extra);
        let marker = format!("m{}", uuid::Uuid::new_v4().simple());
        let out = sb.run(None, &["python3", "-c", script, &marker]);
        assert!(out.status.success(), "{extra:?}: {out:?}");
        let ev = sb.events();
        let cmds = commands(&ev);
        for (suffix, args) in [("ve", ["a1", "a2"]), ("veat", ["b1", "b2"])] {
            let path = format!("/nonexistent/{marker}-{suffix}");
            let found: Vec<_> = cmds.iter().filter(|e| e["path"] == path.as_str()).collect();
            assert_eq!(found.len(), 1, "{extra:?}: {path} in {cmds:#?}");
            assert_eq!(found[0]["return_code"], -2, "{extra:?}: ENOENT");
            // (argv[0] is the record's program, not in `argv`.)
            assert_eq!(argv(found[0]), args, "{extra:?}");
        }
    }
}

/// The writer collects records on a tick instead of waking for each
/// (recorder.rs, `TICK`): a command reaches the log within a second of
/// running, the first after a quiet spell (the writer's tick grown to its
/// idle length) and each of a slow trickle (never enough to wake it).
#[test]
fn commands_reach_the_log_within_a_second_when_few_come() {
    let sb = Sandbox::new();
    let marker = format!("m{}", uuid::Uuid::new_v4().simple());
    let script = format!(
        "sleep 1.5; for i in 1 2 3 4 5 6 7 8; do /bin/echo {marker} $i >/dev/null; sleep 0.07; done; sleep 2"
    );
    let mut child = sb
        .run_cmd(None, &["/bin/sh", "-c", &script])
        .spawn()
        .unwrap();
    // When each marked command was first seen in the --events file.
    let mut seen: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        Default::default();
    while child.try_wait().unwrap().is_none() {
        let now = chrono::Utc::now();
        for e in sb.events() {
            if e["event"] == "session.command" && argv(&e).first() == Some(&marker) {
                let i = argv(&e)[1].clone();
                seen.entry(i).or_insert(now);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(child.wait().unwrap().success());
    let ev = sb.events();
    let marked: Vec<_> = commands(&ev)
        .into_iter()
        .filter(|e| argv(e).first() == Some(&marker))
        .collect();
    assert_eq!(marked.len(), 8, "{marked:?}");
    for e in marked {
        let i = &argv(e)[1];
        let ran = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
        let at = seen
            .get(i)
            .unwrap_or_else(|| panic!("command {i} seen only after the end"));
        let late = at.signed_duration_since(ran);
        assert!(
            late < chrono::TimeDelta::seconds(1),
            "command {i} reached the log {late} after it ran"
        );
    }
}
