//! Terminal recording through real SSH logins (sshd with a pty, `ssh -tt`,
//! pam_restrict.so, restrictd serve): the replay is byte for byte what the
//! client received, for plain commands and a full-screen program; a
//! password typed at a prompt that does not echo is nowhere unless input
//! is recorded; the rate limit leaves out bytes that are counted and
//! marked exactly; `show` tells the session in order.

mod common;

use std::{
    io::{Read, Write},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{read_until, sshd::*};

/// Sessions of `user` that `d` has reported starting so far.
fn starts(d: &Daemon, user: &User) -> usize {
    d.events()
        .iter()
        .filter(|e| e["event"] == "session.start" && e["user"] == user.name.as_str())
        .count()
}

/// Waits for the start and the end of `user`'s session number `nth` (from
/// 0) at `d`, and returns its sid. By number, not the latest seen: the
/// writer may not have written a new session's start yet when the client
/// is done.
fn ended_sid(d: &Daemon, user: &User, nth: usize) -> String {
    let mut sid = String::new();
    wait_for(
        "session.start and session.end",
        Duration::from_secs(15),
        || {
            let events = d.events();
            let Some(started) = events
                .iter()
                .filter(|e| e["event"] == "session.start" && e["user"] == user.name.as_str())
                .nth(nth)
                .and_then(|e| e["sid"].as_str())
            else {
                return false;
            };
            let ended = events
                .iter()
                .any(|e| e["event"] == "session.end" && e["sid"] == started);
            if ended {
                sid = started.to_string();
            }
            ended
        },
    );
    sid
}

fn restrictctl(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_restrictctl"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// `ssh -tt` running `remote` with TERM set; what the client printed.
fn tty_session(sshd: &Sshd, user: &User, remote: &str) -> Vec<u8> {
    let out = sshd
        .ssh_cmd_with(user, &["-tt"], remote)
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out.stdout
}

/// Every file under `dir`, read as bytes.
fn all_files(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        all.extend(std::fs::read(e.path()).unwrap_or_default());
    }
    all
}

/// What the recording holds of the user's typing (input chunks), as text.
fn typed(rec: &restrictd::terminal::Recording) -> String {
    let bytes: Vec<u8> = rec
        .chunks()
        .filter(|c| c.input)
        .flat_map(|c| c.data)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn recording(d: &Daemon, sid: &str) -> restrictd::terminal::Recording {
    restrictd::terminal::Recording::of_session(&d.terminal_dir(), sid).unwrap()
}

#[test]
fn the_replay_is_what_the_client_received_for_commands_and_a_full_screen_program() {
    let bus = Bus::new(true);
    let user = User::new();
    let d = Daemon::new(&bus, None);
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    // Plain output with colours, a tab and bytes that are not UTF-8; then
    // top drawing its full screen once; then output through a pty the
    // user opens inside the session (script), which must be neither missed
    // nor recorded twice.
    for remote in [
        "echo hello; printf '\\033[1;31mred\\033[0m\\tcol\\n\\377\\376end\\n'; ls -l /",
        "top -b -n 1 | head -5; top -n 1",
        "script -qc 'printf \"in%s-%s\\n\" ner pty; ls /' /dev/null; echo outer",
    ] {
        let before = starts(&d, &user);
        let got = tty_session(&sshd, &user, remote);
        let sid = ended_sid(&d, &user, before);
        let replay = restrictctl(&d.terminal_dir(), &["play", &sid, "--speed", "1000"]).stdout;
        assert!(got.len() > 30, "{}", String::from_utf8_lossy(&got));
        let rec = recording(&d, &sid);
        let ttys: std::collections::BTreeSet<u32> = rec.chunks().map(|c| c.tty).collect();
        assert_eq!(ttys.len(), 1, "one terminal recorded: {ttys:?}");
        if remote.starts_with("script") {
            assert!(String::from_utf8_lossy(&got).contains("inner-pty"));
        }
        assert!(
            replay == got,
            "replay of {sid} differs from what the client received:\nclient: {:?}\nreplay: {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&replay)
        );
        // asciinema's format carries the same output (as text).
        let cast = restrictctl(&d.terminal_dir(), &["export", &sid]).stdout;
        let cast = String::from_utf8(cast).unwrap();
        let mut lines = cast.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["version"], 2);
        let out: String = lines
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e[1] == "o")
            .map(|e| e[2].as_str().unwrap().to_string())
            .collect();
        assert_eq!(out, String::from_utf8_lossy(&got));
        // The next login's session is a new one.
        wait_for("the session to be gone", Duration::from_secs(10), || {
            d.sessions().is_empty()
        });
        std::fs::remove_file(restrictd::terminal::path_of(&d.terminal_dir(), &sid)).unwrap();
    }
}

/// Logs in with a pty, answers a prompt that does not echo with `secret`;
/// returns the session's sid and what the client saw.
fn type_a_password(sshd: &Sshd, user: &User, d: &Daemon, secret: &str) -> (String, String) {
    let before = starts(d, user);
    let mut child = sshd
        .ssh_cmd_with(
            user,
            &["-tt"],
            "stty -echo; printf 'Password: '; read -r pw; stty echo; echo; echo \"got ${#pw} chars\"",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = read_until(&mut stdout, "Password: ");
    // Typed only once echo is off.
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(format!("{secret}\r").as_bytes())
        .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    seen += &rest;
    assert!(child.wait().unwrap().success(), "{seen}");
    assert!(
        seen.contains(&format!("got {} chars", secret.len())),
        "{seen}"
    );
    (ended_sid(d, user, before), seen)
}

#[test]
fn a_password_at_a_silent_prompt_is_nowhere_unless_input_is_recorded() {
    let bus = Bus::new(true);
    let user = User::new();
    let d = Daemon::new(&bus, None);
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    let secret = "s3cr3t-Pa55-7781";
    let (sid, seen) = type_a_password(&sshd, &user, &d, secret);
    assert!(!seen.contains(secret), "the terminal echoed it: {seen}");
    let rec = recording(&d, &sid);
    assert!(rec.output(rec.main_tty(None).unwrap()).len() > 10);
    assert!(rec.chunks().all(|c| !c.input), "input is off by default");
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(secret)
    };
    let files = all_files(&d.terminal_dir());
    let events = std::fs::read(d.dir.path().join("events.jsonl")).unwrap();
    for (what, bytes) in [("recordings", &files), ("events", &events)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(secret) && !text.contains(&b64),
            "{what} hold the password"
        );
    }
    assert!(rec
        .chunks()
        .all(|c| !String::from_utf8_lossy(&c.data).contains(secret)));

    // With input recorded, the same password is in the recording: the
    // check above can see it.
    drop(sshd);
    drop(d);
    let d = Daemon::with_config(&bus, None, "terminal_recording: input_output\n");
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    let (sid, _) = type_a_password(&sshd, &user, &d, secret);
    let rec = recording(&d, &sid);
    let typed = typed(&rec);
    assert!(typed.contains(secret), "input: {typed:?}");
}

/// The terminal and opens are read in one of two places: where opens are
/// recorded (the default), by the one program on every syscall's exit;
/// elsewhere, and where that program is refused, by the read, write and
/// open tracepoints. Each records what the session showed, what the user
/// typed, and the files opened.
#[test]
fn what_the_exit_program_records_is_recorded_without_it_too() {
    let bus = Bus::new(true);
    let user = User::new();
    let secret = "s3cr3t-Pa55-4410";
    let refused = "refused (RESTRICTD_FAULT=refuse-exit_syscall)";
    for case in ["no disk events", "exit program refused"] {
        let mut d = if case == "no disk events" {
            Daemon::with_config(
                &bus,
                None,
                "terminal_recording: input_output\nenhanced_recording:\n  disk_events: false\n",
            )
        } else {
            let mut d = Daemon::with_config(&bus, None, "terminal_recording: input_output\n");
            // Its link pinned by the first start, the next one would reuse
            // it: unpin it, so that the start after attaches again.
            d.stop();
            for version in std::fs::read_dir(&d.pin_dir).unwrap() {
                let link = version.unwrap().path().join("link-btf-sys_exit");
                std::fs::remove_file(&link).unwrap();
            }
            d.env
                .push(("RESTRICTD_FAULT".into(), "refuse-exit_syscall".into()));
            d.start();
            assert!(d.log().contains(refused), "{}", d.log());
            d
        };
        let sshd = Sshd::new(&bus, &user, "fail=closed");
        let (sid, seen) = type_a_password(&sshd, &user, &d, secret);
        let rec = recording(&d, &sid);
        let shown = rec.output(rec.main_tty(None).unwrap());
        let shown = String::from_utf8_lossy(&shown);
        assert!(
            shown.contains("Password: ") && shown.contains(&format!("got {} chars", secret.len())),
            "{case}: output {shown:?}, the client saw {seen:?}"
        );
        let typed = typed(&rec);
        assert!(typed.contains(secret), "{case}: input {typed:?}");
        if case == "no disk events" {
            assert!(!d.log().contains(refused));
        } else {
            // The session's sshd and shell open files (/etc/group, the
            // shell's startup files): each open that succeeded returned an fd.
            let events = d.events();
            let opened = |e: &&serde_json::Value| {
                e["event"] == "session.disk"
                    && e["sid"] == sid.as_str()
                    && e["return_code"].as_i64().is_some_and(|fd| fd >= 0)
            };
            assert!(
                events.iter().filter(opened).count() >= 3,
                "{case}: opens {:#?}",
                events.iter().filter(opened).collect::<Vec<_>>()
            );
        }
        drop(sshd);
        d.stop();
    }
}

#[test]
fn the_rate_limit_leaves_out_bytes_that_are_counted_and_marked_exactly() {
    let bus = Bus::new(true);
    let user = User::new();
    let d = Daemon::with_config(
        &bus,
        None,
        "terminal:\n  dir: @TERMINAL_DIR@\n  rate_limit: 20000\n",
    );
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    let got = tty_session(
        &sshd,
        &user,
        "head -c 400000 /dev/zero | tr '\\0' x; echo; echo end",
    );
    assert!(got.len() >= 400_000);
    // This daemon's first session.
    let sid = ended_sid(&d, &user, 0);
    let rec = recording(&d, &sid);
    let tty = rec.main_tty(None).unwrap();
    let kept = rec.output(tty).len() as u64;
    let gaps: u64 = rec.lines.iter().filter_map(|l| l.gap).sum();
    assert!(kept < 200_000, "the limit held: {kept} kept");
    assert!(gaps > 0);
    assert_eq!(
        kept + gaps,
        got.len() as u64,
        "every byte the client got is either recorded or counted as left out"
    );
    let events = d.events();
    let counted: u64 = events
        .iter()
        .filter(|e| e["sid"] == sid.as_str() && e["event"] == "session.lost")
        .map(|e| e["terminal_bytes_dropped"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, gaps, "session.lost reports what the file marks");
    let end = events
        .iter()
        .find(|e| e["sid"] == sid.as_str() && e["event"] == "session.end")
        .unwrap();
    assert_eq!(end["terminal_bytes_dropped"].as_u64(), Some(gaps));
    let shown = String::from_utf8(restrictctl(&d.terminal_dir(), &["show", &sid]).stdout).unwrap();
    assert!(
        shown.contains("bytes of the terminal not recorded"),
        "{shown}"
    );
}

#[test]
fn show_tells_the_session_in_order() {
    let bus = Bus::new(true);
    let user = User::new();
    let policy = common::policy_yaml(&["127.0.0.0/8"], &["127.0.0.99/32"]);
    let d = Daemon::new(&bus, Some(&policy));
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    let got = tty_session(
        &sshd,
        &user,
        "cat /etc/hostname; bash -c 'echo hi > /dev/tcp/127.0.0.99/9' 2>/dev/null; echo finished-here",
    );
    assert!(String::from_utf8_lossy(&got).contains("finished-here"));
    // This daemon's first session.
    let sid = ended_sid(&d, &user, 0);
    let out = restrictctl(&d.terminal_dir(), &["show", &sid, "--json"]).stdout;
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["header"]["user"], user.name.as_str());
    let items = doc["items"].as_array().unwrap();
    let find = |what: &dyn Fn(&serde_json::Value) -> bool, name: &str| {
        items
            .iter()
            .position(what)
            .unwrap_or_else(|| panic!("no {name} in {items:#?}"))
    };
    let cat = find(
        &|i| i["kind"] == "command" && i["event"]["path"] == "/usr/bin/cat",
        "cat",
    );
    let read = find(
        &|i| i["kind"] == "disk" && i["event"]["path"] == "/etc/hostname",
        "the file read",
    );
    let bash = find(
        &|i| i["kind"] == "command" && i["event"]["path"] == "/usr/bin/bash",
        "bash",
    );
    let denied = find(
        &|i| {
            i["kind"] == "network" && i["denied"] == true && i["event"]["dst_addr"] == "127.0.0.99"
        },
        "the denied connect",
    );
    let last = find(
        &|i| i["kind"] == "output" && i["text"].as_str().unwrap().contains("finished-here"),
        "the last output",
    );
    assert!(
        cat < read && read < bash && bash < denied && denied < last,
        "{items:#?}"
    );
    assert_eq!(items[bash]["depth"], items[cat]["depth"]);
    let shown = String::from_utf8(restrictctl(&d.terminal_dir(), &["show", &sid]).stdout).unwrap();
    assert!(
        shown.contains("DENIED") && shown.contains("finished-here") && shown.contains(&user.name),
        "{shown}"
    );
}
