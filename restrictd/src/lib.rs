//! restrictd: restricted and recorded sessions. Modules, each with one job:
//! - `policy`: the network policy file (Teleport's `network_restrictions`);
//! - `config`: the daemon's configuration file;
//! - `cgroup`: finding cgroup v2 and managing session cgroups;
//! - `bpf`: loading/attaching the BPF programs and writing their maps;
//! - `session`: session registry, turning kernel records into events;
//! - `events`: the event model and its outputs (JSON lines, journald, syslog);
//! - `run`: `restrictd run`, one restricted session around a command.
pub mod bpf;
pub mod cgroup;
pub mod config;
pub mod events;
pub mod policy;
pub mod run;
pub mod session;
