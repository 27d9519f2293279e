//! restrictd: restricted and recorded sessions. Modules, each with one job:
//! - `pamconf`: finding PAM lines that would lock out logins without the module;
//! - `policy`: the network policy file (Teleport's `network_restrictions`);
//! - `config`: the daemon's configuration file;
//! - `cgroup`: finding cgroup v2 and managing session cgroups;
//! - `bpf`: loading/attaching the BPF programs and writing their maps;
//! - `session`: session registry, turning kernel records into events;
//! - `events`: the event model and its outputs (JSON lines, journald, syslog);
//! - `recorder`: kernel ring buffer -> session stamp -> outputs;
//! - `run`: `restrictd run`, one restricted session around a command;
//! - `daemon`: `restrictd serve`, sessions for PAM over D-Bus (`service`).
pub mod bpf;
pub mod btf;
pub mod cgroup;
pub mod config;
pub mod daemon;
pub mod events;
pub mod pamconf;
pub mod pathfilter;
pub mod policy;
pub mod recorder;
pub mod run;
pub mod service;
pub mod session;
pub mod tracefs;
