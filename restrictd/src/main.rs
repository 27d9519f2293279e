use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use restrictd::{
    policy::{Policy, Strictness},
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
    /// Validate a policy file and summarize it; exits 1 if it is invalid.
    /// Warnings (a CIDR with host bits set, read as Teleport reads it) go
    /// to stderr.
    Check {
        /// Refuse what Teleport accepts with a warning (host bits set).
        #[arg(long)]
        strict: bool,
        #[arg(value_name = "FILE")]
        file: PathBuf,
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
        Command::Check { strict, file } => match Policy::load(
            &file,
            if strict {
                Strictness::Strict
            } else {
                Strictness::Teleport
            },
        ) {
            Ok(p) => {
                for w in &p.warnings {
                    eprintln!("warning: {w}");
                }
                let c = p.counts();
                println!(
                    "{}: valid network_restrictions {:?}\n  allow: {} IPv4, {} IPv6 CIDRs\n  deny:  {} IPv4, {} IPv6 CIDRs",
                    file.display(),
                    p.name,
                    c.allow_v4,
                    c.allow_v6,
                    c.deny_v4,
                    c.deny_v6
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("restrictd: {e}");
                ExitCode::from(1)
            }
        },
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
