use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use restrictd::{
    policy::{PolicySet, Strictness},
    run::{load_config, run, RunArgs, EXIT_INTERNAL},
};

#[derive(Parser)]
#[command(
    name = "restrictd",
    version,
    about = "Restricted and recorded sessions"
)]
struct Cli {
    /// Daemon config file for `serve` when no subcommand is given.
    #[arg(long, value_name = "FILE", global = false)]
    config: Option<PathBuf>,
    /// Default: `serve`.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon on the D-Bus system bus (what pam_restrict talks to).
    Serve {
        /// Config file (default: /etc/restrictd/restrictd.yaml if it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also append every event as one JSON object per line; `-` is stderr.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
    },
    /// Run CMD in a new restricted, recorded session and exit with its status.
    Run {
        /// Daemon config file (default: /etc/restrictd/restrictd.yaml if it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Network policy (Teleport `network_restrictions`). Without it, all
        /// destinations are allowed (events are still recorded).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Also write every event as one JSON object per line; `-` is stderr.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Validate policy files (a directory: its *.yaml and *.yml files, in
    /// name order), taken together in the order given, as the daemon takes
    /// its policy file and policy directory; print whom each policy binds.
    /// Exits 1 if any is invalid. Warnings (a CIDR with host bits set, read
    /// as Teleport reads it; a policy an earlier one shadows) go to stderr.
    Check {
        /// Refuse what Teleport accepts with a warning (host bits set).
        #[arg(long)]
        strict: bool,
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    // The daemon tells what it does (info); `run` and `check` stay quiet.
    let serving = !std::env::args().skip(1).any(|a| a == "run" || a == "check");
    let level = if serving { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .init();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve {
        config: cli.config,
        events: None,
    });
    match command {
        Command::Serve { config, events } => {
            match load_config(config.as_deref())
                .and_then(|c| restrictd::service::serve(c, events.as_deref()))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("restrictd: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check { strict, files } => {
            let strictness = if strict {
                Strictness::Strict
            } else {
                Strictness::Teleport
            };
            match check(&files, strictness) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("restrictd: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run {
            config,
            policy,
            events,
            command,
        } => match run(RunArgs {
            config,
            policy,
            events,
            command,
        }) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("restrictd: {e:#}");
                ExitCode::from(EXIT_INTERNAL as u8)
            }
        },
    }
}

/// `restrictd check`: the set of `files`, summarized; warnings to stderr.
fn check(files: &[PathBuf], strictness: Strictness) -> Result<String, String> {
    use std::fmt::Write;
    let mut set = PolicySet::default();
    for f in files {
        let part = if f.is_dir() {
            PolicySet::load_dir(f, strictness)
        } else {
            PolicySet::load(f, None, strictness)
        }
        .map_err(|e| e.to_string())?;
        for p in part.default.into_iter().chain(part.policies) {
            set.add(p).map_err(|e| e.to_string())?;
        }
    }
    restrictd::bpf::check_fits(&set)?;
    for w in set.warnings() {
        eprintln!("warning: {w}");
    }
    for w in set.shadowed() {
        eprintln!("warning: {w}");
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut out = String::new();
    let rules = |p: &restrictd::policy::Policy| {
        let c = p.counts();
        format!(
            "  allow: {} IPv4, {} IPv6 CIDRs\n  deny:  {} IPv4, {} IPv6 CIDRs\n",
            c.allow_v4, c.allow_v6, c.deny_v4, c.deny_v6
        )
    };
    match &set.default {
        Some(d) => {
            let _ = write!(
                out,
                "{}: valid network_restrictions {:?} (the host default: logins no other policy binds)\n{}",
                names.join(", "),
                d.name,
                rules(d)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{}: valid; no network_restrictions: logins no policy binds are not restricted",
                names.join(", ")
            );
        }
    }
    for (i, p) in set.policies.iter().enumerate() {
        let _ = writeln!(
            out,
            "policy {} {:?} ({}): binds {}{}",
            i + 1,
            p.name,
            p.at,
            p.matcher.describe(),
            if p.unrestricted {
                "; unrestricted (recorded)"
            } else {
                ""
            }
        );
        if !p.controls.is_empty() {
            // Keys it leaves out are the daemon config's session_controls.
            let _ = writeln!(
                out,
                "  session controls: {} (others as the config's session_controls)",
                p.controls.describe()
            );
        }
        if let Some(d) = &p.record.disk_paths {
            let _ = writeln!(
                out,
                "  disk opens recorded (of what the host records): under {}{}",
                d.include.join(", "),
                if d.exclude.is_empty() {
                    String::new()
                } else {
                    format!("; not under {}", d.exclude.join(", "))
                }
            );
        }
        if !p.unrestricted {
            out.push_str(&rules(p));
        }
    }
    Ok(out)
}
