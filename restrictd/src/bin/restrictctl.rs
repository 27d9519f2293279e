//! restrictctl: the admin CLI for a running restrictd, over D-Bus.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use restrictd::pamconf;
use restrictd_dbus::{Daemon1Proxy, SessionInfo};

#[derive(Parser)]
#[command(name = "restrictctl", version, about = "Control a running restrictd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Daemon version, session count, active policy, lost events.
    Status,
    /// List sessions.
    Sessions {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show or replace the network policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Act on one session.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Lock a user or group out now: its live sessions end, its other
    /// processes on the host are killed, and its logins are refused (with
    /// the reason) until the TTL passes or `unlock`. Kept across restarts
    /// and reboots.
    Lock {
        #[arg(value_parser = ["user", "group"])]
        target: String,
        name: String,
        /// How long the lock holds ("30m", "8h", "2d"); default: until unlocked.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// Shown to the refused user and in the lock's events.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a lock.
    Unlock {
        #[arg(value_parser = ["user", "group"])]
        target: String,
        name: String,
    },
    /// List the locks in force.
    Locks {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the PAM lines that name pam_restrict.so and say whether each
    /// would deny every login if the module were removed; exits 1 if any
    /// would. Warns about lines that run before pam_systemd.so. Needs no
    /// daemon. The packages run it before removal.
    PamCheck {
        /// Directory of per-service PAM files.
        #[arg(long, default_value = "/etc/pam.d")]
        pam_d: PathBuf,
        /// The single-file PAM configuration.
        #[arg(long, default_value = "/etc/pam.conf")]
        pam_conf: PathBuf,
    },
    /// Replay session SID's terminal with its original timing (needs no
    /// daemon; reads the recording under the config's `terminal.dir`).
    Play {
        sid: String,
        /// Faster (2) or slower (0.5) than it happened.
        #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
        speed: f64,
        /// Pauses longer than this many seconds are cut to it.
        #[arg(long, default_value_t = 5.0, value_parser = parse_speed)]
        max_idle: f64,
        /// Which terminal (`/dev/pts/N`) of the session; default: its first.
        #[arg(long)]
        tty: Option<u32>,
        #[command(flatten)]
        rec: RecordingArgs,
    },
    /// Print session SID as a person reads it: who, from where, when, its
    /// commands as a process tree, network connections (denials marked),
    /// file opens, and the terminal's text between them.
    Show {
        sid: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        rec: RecordingArgs,
    },
    /// Write session SID's terminal as asciicast v2 (asciinema) to stdout.
    Export {
        sid: String,
        #[arg(long, value_parser = ["asciicast"], default_value = "asciicast")]
        format: String,
        /// Which terminal of the session; default: its first.
        #[arg(long)]
        tty: Option<u32>,
        #[command(flatten)]
        rec: RecordingArgs,
    },
}

/// Where recordings are: the daemon's config says.
#[derive(clap::Args)]
struct RecordingArgs {
    /// The daemon's configuration file (for `terminal.dir`).
    #[arg(long, default_value = restrictd::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// The recordings directory, instead of the config's.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl RecordingArgs {
    fn load(&self, sid: &str) -> anyhow::Result<restrictd::terminal::Recording> {
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None if self.config.exists() => {
                restrictd::config::Config::load(&self.config)?.terminal.dir
            }
            None => restrictd::config::DEFAULT_TERMINAL_DIR.into(),
        };
        restrictd::terminal::Recording::of_session(&dir, sid)
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?}: a number above 0")),
    }
}

/// `play`, `show`, `export`: local files, no daemon.
fn recording_command(c: &Command) -> Option<anyhow::Result<()>> {
    use restrictd::terminal;
    use std::io::{IsTerminal, Write};
    Some(match c {
        Command::Play {
            sid,
            speed,
            max_idle,
            tty,
            rec,
        } => rec.load(sid).and_then(|r| {
            let tty = r
                .main_tty(*tty)
                .ok_or_else(|| anyhow::anyhow!("session {sid} has no terminal output recorded (a session without a pty?); `restrictctl show {sid}` lists its events"))?;
            r.play(
                tty,
                *speed,
                *max_idle,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr(),
            )
        }),
        Command::Show { sid, json, rec } => rec.load(sid).and_then(|r| {
            let mut out = std::io::stdout().lock();
            if *json {
                let doc = serde_json::json!({
                    "header": r.header,
                    "items": terminal::show(&r),
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                let color = std::io::stdout().is_terminal();
                write!(out, "{}", terminal::show_text(&r, color))?;
            }
            Ok(())
        }),
        Command::Export { sid, tty, rec, .. } => rec.load(sid).and_then(|r| {
            let tty = r
                .main_tty(*tty)
                .ok_or_else(|| anyhow::anyhow!("session {sid} has no terminal output recorded"))?;
            write!(std::io::stdout().lock(), "{}", r.asciicast(tty))?;
            Ok(())
        }),
        _ => return None,
    })
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the active policy (YAML).
    Show,
    /// Validate FILE and apply it (with the policy directory's documents)
    /// to every session and user, running ones included, each evaluated
    /// again.
    Apply { file: PathBuf },
    /// Which policy binds a login and what it decides for DEST
    /// (ADDR[:PORT][/tcp|udp|icmp]; [ADDR]:PORT for IPv6), with the rule.
    Explain {
        /// The user logging in (groups from NSS).
        #[arg(long)]
        user: String,
        /// The login's source address.
        #[arg(long)]
        from: Option<String>,
        /// An SSH certificate principal of the login.
        #[arg(long)]
        principal: Option<String>,
        /// The SSH authentication method (publickey, password, ...).
        #[arg(long)]
        auth_method: Option<String>,
        /// The PAM service.
        #[arg(long, default_value = "sshd")]
        service: String,
        dest: String,
    },
}

/// A TTL in seconds, from "30m", "8h", "90s" or seconds.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let d = restrictd::controls::parse_duration(s)?;
    if d.is_zero() {
        return Err("a TTL must be more than 0 (leave --ttl out for a lock until unlock)".into());
    }
    Ok(d.as_secs().max(1))
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Kill every process of session ID (ends the login).
    Kill { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::PamCheck { pam_d, pam_conf } = &cli.command {
        return pam_check(pam_d, pam_conf);
    }
    if let Some(r) = recording_command(&cli.command) {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            // A reader that went away (`| head`) is not an error.
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("restrictctl: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match zbus::block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restrictctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn explain(e: zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            let msg = msg.unwrap_or_default();
            match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                    format!("restrictd is not running ({name})")
                }
                "org.freedesktop.DBus.Error.AccessDenied" => format!("access denied: {msg}"),
                _ => msg,
            }
        }
        zbus::Error::FDO(e) => match *e {
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                "restrictd is not running".into()
            }
            zbus::fdo::Error::AccessDenied(m) => format!("access denied: {m}"),
            other => other.to_string(),
        },
        other => format!("cannot reach restrictd on the system bus: {other}"),
    }
}

async fn run(cmd: Command) -> Result<(), String> {
    let conn = zbus::Connection::system().await.map_err(explain)?;
    let d = Daemon1Proxy::new(&conn).await.map_err(explain)?;
    match cmd {
        Command::Status => {
            let s = d.status().await.map_err(explain)?;
            println!("restrictd {} (kernel state {})", s.version, s.kernel_state);
            println!("sessions:   {}", s.sessions);
            let policy = if s.policy.is_empty() {
                "none (all destinations allowed)".to_string()
            } else {
                s.policy
            };
            println!("policy:     {policy}");
            println!("system log: {}", s.system_log);
            println!(
                "lost events: network {}, command {}, disk {} (ring buffers full, all sessions)",
                s.lost_network, s.lost_command, s.lost_disk
            );
            let sessions = d.list_sessions().await.map_err(explain)?;
            for s in sessions.iter().filter(|s| lost_total(s) > 0) {
                println!(
                    "  session {} ({}): buffer full: network {}, command {}, disk {}; over a limit: network {}, command {}, disk {}; not taken by the system log: {}",
                    s.sid,
                    s.user,
                    s.lost_network,
                    s.lost_command,
                    s.lost_disk,
                    s.network_events_dropped,
                    s.command_events_dropped,
                    s.disk_events_dropped,
                    s.unwritten
                );
            }
        }
        Command::Sessions { json } => {
            let v = d.list_sessions().await.map_err(explain)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
                );
            } else {
                print_table(&v);
            }
        }
        Command::Policy {
            command: PolicyCommand::Show,
        } => {
            let (name, text) = d.get_policy().await.map_err(explain)?;
            if name.is_empty() {
                println!("# no policy: all destinations are allowed");
            } else {
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
            }
        }
        Command::Policy {
            command: PolicyCommand::Apply { file },
        } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let summary = d
                .apply_policy(&text, &file.display().to_string())
                .await
                .map_err(explain)?;
            println!("{summary}");
        }
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    user,
                    from,
                    principal,
                    auth_method,
                    service,
                    dest,
                },
        } => {
            let mut login = std::collections::HashMap::new();
            login.insert("user".to_string(), user);
            login.insert("service".to_string(), service);
            for (k, v) in [
                ("from", from),
                ("principal", principal),
                ("auth_method", auth_method),
            ] {
                if let Some(v) = v {
                    login.insert(k.to_string(), v);
                }
            }
            let out = d.explain_policy(&login, &dest).await.map_err(explain)?;
            print!("{out}");
        }
        Command::Session {
            command: SessionCommand::Kill { id },
        } => {
            d.terminate_session(&id).await.map_err(explain)?;
            println!("session {id} terminated");
        }
        Command::Lock {
            target,
            name,
            ttl,
            reason,
        } => {
            let out = d
                .lock(&target, &name, ttl.unwrap_or(0), &reason)
                .await
                .map_err(explain)?;
            println!("{out}");
        }
        Command::Unlock { target, name } => {
            println!("{}", d.unlock(&target, &name).await.map_err(explain)?);
        }
        Command::Locks { json } => {
            let v = d.list_locks().await.map_err(explain)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "{:<6} {:<20} {:<21} {:<21} REASON",
                    "TARGET", "NAME", "CREATED", "EXPIRES"
                );
                for l in v {
                    println!(
                        "{:<6} {:<20} {:<21} {:<21} {}",
                        l.target,
                        l.name,
                        l.created,
                        if l.expires.is_empty() {
                            "never (unlock)"
                        } else {
                            &l.expires
                        },
                        l.reason
                    );
                }
            }
        }
        Command::PamCheck { .. }
        | Command::Play { .. }
        | Command::Show { .. }
        | Command::Export { .. } => unreachable!("handled in main without the bus"),
    }
    Ok(())
}

fn pam_check(pam_d: &Path, pam_conf: &Path) -> ExitCode {
    let lines = match pamconf::scan(pam_conf, pam_d) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("restrictctl: reading {}: {e}", pam_d.display());
            return ExitCode::from(2);
        }
    };
    // A warning, not a failure: restrictd follows the session into logind's
    // scope, and the packages' removal check must not stop on it.
    for o in pamconf::order_warnings(pam_d) {
        println!(
            "{}:{}: warning: in service {}, {} runs before pam_systemd.so ({}:{})\n    \
             logind then moves the login into its scope; restrictd registers the scope at \
             the move and the session follows it, but the line belongs after pam_systemd.so \
             (after @include common-session), where the session starts in the scope.",
            o.file.display(),
            o.line,
            o.service.file_name().unwrap_or_default().to_string_lossy(),
            pamconf::MODULE,
            o.systemd_file.display(),
            o.systemd_line
        );
    }
    // Services whose stack lets the user write sshd's variables first.
    let mut services: Vec<&std::path::Path> = lines.iter().map(|l| l.file.as_path()).collect();
    services.sort();
    services.dedup();
    for f in services.into_iter().filter(|f| f.parent() == Some(pam_d)) {
        let service = f.file_name().unwrap_or_default().to_string_lossy();
        if let Some((file, line)) = pamconf::user_env_before(pam_d, &service) {
            println!(
                "{}:{line}: note: in service {service}, pam_env.so user_readenv=1 runs before {}: \
                 a user's ~/.pam_environment can set SSH_AUTH_INFO_0, so policies' `auth` \
                 criteria bind nobody through this service; put the {} line before it \
                 (after @include common-session) or drop user_readenv=1 to use them.",
                file.display(),
                pamconf::MODULE,
                pamconf::MODULE
            );
        }
    }
    if lines.is_empty() {
        println!("no PAM configuration names {}", pamconf::MODULE);
        return ExitCode::SUCCESS;
    }
    for l in &lines {
        let verdict = if l.locks_out {
            "DENIES EVERY LOGIN if the module is removed"
        } else {
            "ok: skipped if the module is removed"
        };
        println!("{}:{}: {}\n    {verdict}", l.file.display(), l.line, l.text);
    }
    if lines.iter().any(|l| l.locks_out) {
        println!(
            "fix: remove those lines, or write them as\n    {}",
            pamconf::RECOMMENDED_LINE
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Every event of the session that was not recorded, whatever the cause.
fn lost_total(s: &SessionInfo) -> u64 {
    s.lost_network
        + s.lost_command
        + s.lost_disk
        + s.disk_events_dropped
        + s.command_events_dropped
        + s.network_events_dropped
        + s.unwritten
}

fn print_table(v: &[SessionInfo]) {
    println!(
        "{:<36}  {:<12} {:<15} {:<8} {:<20} {:>5} {:>7}  {:<6} POLICY",
        "SESSION", "USER", "FROM", "SERVICE", "STARTED", "PROCS", "LOST", "STATE"
    );
    for s in v {
        println!(
            "{:<36}  {:<12} {:<15} {:<8} {:<20} {:>5} {:>7}  {:<6} {}",
            s.sid,
            s.user,
            s.remote_host,
            s.service,
            s.started.get(..19).unwrap_or(&s.started),
            s.processes,
            lost_total(s),
            s.state,
            if s.policy.is_empty() {
                "(host default)"
            } else {
                &s.policy
            }
        );
    }
}
