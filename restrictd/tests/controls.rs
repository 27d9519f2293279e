//! Session controls and locks through real SSH logins (sshd, pam_restrict.so
//! with `fail=open`, dbus-daemon, restrictd serve): a login beyond a
//! policy's `max_sessions` refused with a message and an event; an idle
//! terminal session warned and ended while a typing one goes on; a session
//! ended at `max_duration`; a lock ending two live sessions and a process
//! of the user outside them, refusing logins across a daemon restart, and
//! an unlock admitting one again.

mod common;

use std::{
    io::{Read, Write},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::sshd::*;

/// Sessions of `user` the daemon lists as open.
fn open_sessions(d: &Daemon, user: &User) -> usize {
    d.sessions()
        .iter()
        .filter(|s| s["user"] == user.name.as_str() && s["state"] == "open")
        .count()
}

/// `ssh` running `remote` in the background, its output collected.
fn background(sshd: &Sshd, user: &User, extra: &[&str], remote: &str) -> Child {
    sshd.ssh_cmd_with(user, extra, remote)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit (at most `timeout`); its stdout and stderr.
fn finish(mut child: Child, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut out);
    (status, out)
}

fn events_named(d: &Daemon, name: &str) -> Vec<serde_json::Value> {
    d.events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

#[test]
fn a_login_beyond_its_policys_max_sessions_is_refused_even_under_fail_open() {
    let bus = Bus::new(true);
    let (alice, bob) = (User::new(), User::new());
    let policy = format!(
        "kind: network_restrictions\nversion: v4\nmetadata:\n  name: host\nspec:\n  allow:\n    - cidr: 127.0.0.0/8\n\
         ---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: one-at-a-time\nspec:\n  match:\n    users: [{}]\n  \
         controls:\n    max_sessions: 1\n  allow:\n    - cidr: 127.0.0.0/8\n",
        alice.name
    );
    // The host default allows 2: bob is not bound by alice's policy.
    let d = Daemon::with_config(
        &bus,
        Some(&policy),
        "session_controls:\n  max_sessions: 2\n",
    );
    let sshd = Sshd::configured(
        &bus,
        &[&alice, &bob],
        &format!("session required {} fail=open", pam_module().display()),
        "",
    );
    let first = background(&sshd, &alice, &[], "sleep 60");
    wait_for("alice's first session", Duration::from_secs(15), || {
        open_sessions(&d, &alice) == 1
    });
    let out = sshd.ssh(&alice, "echo admitted");
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(!said.contains("admitted"), "{said}");
    assert!(
        said.contains("restrictd: login refused")
            && said.contains("max_sessions 1")
            && said.contains("one-at-a-time"),
        "the user is told why: {said}"
    );
    wait_for("session.rejected", Duration::from_secs(5), || {
        !events_named(&d, "session.rejected").is_empty()
    });
    let r = &events_named(&d, "session.rejected")[0];
    assert_eq!(r["code"], "T1006W");
    assert_eq!(r["user"], alice.name.as_str());
    assert_eq!(r["reason"], "max_sessions");
    assert_eq!(r["max"], 1);
    assert_eq!(r["policy"], "one-at-a-time");
    assert_eq!(open_sessions(&d, &alice), 1, "no session was made for it");
    // bob's limit is the host default's 2.
    let b1 = background(&sshd, &bob, &[], "sleep 60");
    wait_for("bob's first session", Duration::from_secs(15), || {
        open_sessions(&d, &bob) == 1
    });
    let out = sshd.ssh(&bob, "echo admitted");
    assert!(text(&out).contains("admitted"), "{}", text(&out));
    // Once alice's session is over, she is admitted again.
    drop(finish(first, Duration::ZERO));
    wait_for("alice's session to end", Duration::from_secs(15), || {
        open_sessions(&d, &alice) == 0
    });
    let out = sshd.ssh(&alice, "echo admitted");
    assert!(
        text(&out).contains("admitted"),
        "{}\n{}",
        text(&out),
        d.log()
    );
    drop(finish(b1, Duration::ZERO));
}

#[test]
fn an_idle_terminal_is_warned_and_ended_while_a_typing_one_goes_on() {
    let bus = Bus::new(true);
    let user = User::new();
    let d = Daemon::with_config(&bus, None, "session_controls:\n  idle_timeout: 30s\n");
    let sshd = Sshd::new(&bus, &user, "fail=open");
    // A command session has no terminal: never idle-timed.
    let command = background(&sshd, &user, &[], "sleep 50; echo command-done");
    // Idle at the keyboard, while a process of the session keeps setting
    // the terminal's access time, as a user dodging the limit would.
    let started = Instant::now();
    let idle = background(
        &sshd,
        &user,
        &["-tt"],
        "t=$(tty); (while :; do touch \"$t\"; sleep 1; done) & exec sh -i",
    );
    let mut typing = background(&sshd, &user, &["-tt"], "");
    wait_for("three sessions", Duration::from_secs(15), || {
        open_sessions(&d, &user) == 3
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut keys = typing.stdin.take().unwrap();
    let s = stop.clone();
    let typist = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if keys.write_all(b"true\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let (status, said) = finish(idle, Duration::from_secs(60));
    let took = started.elapsed();
    assert!(status.is_some(), "the idle session was not ended: {said}");
    assert!(
        said.contains("this session ends in") && said.contains("unless you type"),
        "warned first: {said}"
    );
    assert!(
        said.contains("(idle_timeout 30s): this session is ended"),
        "{said}"
    );
    assert!(took >= Duration::from_secs(29), "ended after {took:?}");
    // The typing session and the command session live on.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        typing.try_wait().unwrap().is_none(),
        "the typing session ended"
    );
    assert_eq!(open_sessions(&d, &user), 2, "{}", d.log());
    let ends = events_named(&d, "session.end");
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["reason"], "idle_timeout");
    stop.store(true, Ordering::Relaxed);
    let _ = typist.join();
    let _ = typing.kill();
    let (_, said) = finish(command, Duration::from_secs(30));
    assert!(said.contains("command-done"), "{said}");
}

#[test]
fn a_session_is_ended_at_its_maximum_duration() {
    let bus = Bus::new(true);
    let user = User::new();
    let d = Daemon::with_config(&bus, None, "session_controls:\n  max_duration: 12s\n");
    let sshd = Sshd::new(&bus, &user, "fail=open");
    let started = Instant::now();
    let (status, said) = finish(
        background(&sshd, &user, &[], "sleep 60; echo ran-to-the-end"),
        Duration::from_secs(40),
    );
    assert!(status.is_some(), "not ended: {said}");
    assert!(!said.contains("ran-to-the-end"), "{said}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(11) && took < Duration::from_secs(25),
        "ended after {took:?}"
    );
    wait_for("session.end", Duration::from_secs(10), || {
        !events_named(&d, "session.end").is_empty()
    });
    assert_eq!(events_named(&d, "session.end")[0]["reason"], "max_duration");
}

#[test]
fn a_lock_ends_sessions_and_processes_refuses_logins_across_a_restart_until_unlocked() {
    let bus = Bus::new(true);
    let user = User::new();
    let mut d = Daemon::new(&bus, None);
    let sshd = Sshd::new(&bus, &user, "fail=open");
    let s1 = background(&sshd, &user, &[], "sleep 120");
    let s2 = background(&sshd, &user, &["-tt"], "");
    wait_for("two sessions", Duration::from_secs(15), || {
        open_sessions(&d, &user) == 2
    });
    // A process of the user's outside every session (as cron would start it).
    let mut outside = Command::new("runuser")
        .args(["-u", &user.name, "--", "sleep", "120"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(outside.try_wait().unwrap().is_none());

    let out = d.ctl(&[
        "lock",
        "user",
        &user.name,
        "--reason",
        "laptop reported stolen",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ended 2 session(s)"), "{}", text(&out));
    let locked_at = Instant::now();
    let (st1, _) = finish(s1, Duration::from_secs(5));
    let (st2, said2) = finish(s2, Duration::from_secs(5));
    assert!(st1.is_some() && st2.is_some(), "sessions still running");
    assert!(
        locked_at.elapsed() < Duration::from_secs(3),
        "{:?}",
        locked_at.elapsed()
    );
    assert!(said2.contains("laptop reported stolen"), "told: {said2}");
    let mut gone = false;
    for _ in 0..20 {
        if outside.try_wait().unwrap().is_some() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone, "the process outside the sessions survived the lock");
    wait_for("both session.end", Duration::from_secs(10), || {
        events_named(&d, "session.end")
            .iter()
            .filter(|e| e["reason"] == "lock")
            .count()
            == 2
    });

    let refused = |d: &Daemon| {
        let out = sshd.ssh(&user, "echo admitted");
        let said = text(&out);
        assert!(!said.contains("admitted"), "{said}\n{}", d.log());
        assert!(
            said.contains("is locked until unlocked: laptop reported stolen"),
            "{said}"
        );
    };
    refused(&d);
    let list = d.ctl(&["locks", "--json"]);
    let locks: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["name"], user.name.as_str());
    // The lock holds across a restart.
    d.stop();
    d.start();
    refused(&d);
    // A process started meanwhile outside sessions dies within the sweep.
    let mut late = Command::new("runuser")
        .args(["-u", &user.name, "--", "sleep", "120"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the sweep to kill a locked user's process",
        Duration::from_secs(5),
        || late.try_wait().unwrap().is_some(),
    );

    let out = d.ctl(&["unlock", "user", &user.name]);
    assert!(out.status.success(), "{}", text(&out));
    let out = sshd.ssh(&user, "echo admitted");
    assert!(text(&out).contains("admitted"), "{}", text(&out));

    d.stop();
    let events = d.events();
    let created: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "lock.created")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["code"], "TLK00I");
    assert_eq!(created[0]["target"]["user"], user.name.as_str());
    assert_eq!(created[0]["message"], "laptop reported stolen");
    assert_eq!(created[0]["sessions_ended"], 2);
    assert!(created[0]["updated_by"]
        .as_str()
        .unwrap()
        .starts_with("root"));
    let deleted: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "lock.deleted")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["code"], "TLK01I");
    let rejected: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "session.rejected" && e["reason"] == "lock")
        .collect();
    assert_eq!(
        rejected.len(),
        2,
        "one refusal before the restart, one after"
    );
}

#[test]
fn locks_refuse_root_unknown_names_and_bad_ttls() {
    let bus = Bus::new(true);
    let d = Daemon::new(&bus, None);
    for (args, says) in [
        (vec!["lock", "user", "root"], "root cannot be locked"),
        (vec!["lock", "user", "no-such-user-rd"], "no user"),
        (vec!["lock", "group", "no-such-group-rd"], "no group"),
        (vec!["unlock", "user", "root"], "is not locked"),
    ] {
        let out = d.ctl(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    let out = d.ctl(&["lock", "user", "nobody", "--ttl", "soon"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("soon"), "{}", text(&out));
}

#[test]
fn a_lock_with_a_ttl_expires_by_itself() {
    let bus = Bus::new(true);
    let user = User::new();
    let d = Daemon::new(&bus, None);
    let sshd = Sshd::new(&bus, &user, "fail=open");
    let out = d.ctl(&["lock", "user", &user.name, "--ttl", "10s"]);
    assert!(out.status.success(), "{}", text(&out));
    let locked_at = Instant::now();
    let out = sshd.ssh(&user, "echo admitted");
    assert!(!text(&out).contains("admitted"), "{}", text(&out));
    assert!(text(&out).contains("is locked until 20"), "{}", text(&out));
    // Refused until the TTL has passed, admitted after.
    let mut admitted = false;
    while locked_at.elapsed() < Duration::from_secs(25) {
        let out = sshd.ssh(&user, "echo admitted");
        if text(&out).contains("admitted") {
            admitted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(admitted, "still locked after 25 s");
    assert!(
        locked_at.elapsed() >= Duration::from_secs(9),
        "admitted after {:?}",
        locked_at.elapsed()
    );
    wait_for("lock.deleted", Duration::from_secs(5), || {
        events_named(&d, "lock.deleted")
            .iter()
            .any(|e| e["expired"] == true)
    });
    let list = d.ctl(&["locks", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&list.stdout).unwrap(),
        Vec::<serde_json::Value>::new()
    );
}
