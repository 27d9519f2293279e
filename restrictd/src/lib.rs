//! restrictd: restricted and recorded sessions. Modules, each with one job:
//! - `policy`: the network policy file (Teleport's `network_restrictions`);
//! - `config`: the daemon's configuration file;
//! - `controls`: session limits (concurrent sessions, idle, duration);
//! - `locks`: users and groups locked out now, kept across restarts;
//! - `cgroup`: finding cgroup v2 and managing session cgroups;
//! - `bpf`: loading/attaching the BPF programs and writing their maps
//!   (`btf`, `tracefs`: the kernel facts they need at load);
//! - `session`: the session registry, stamping events with their session;
//! - `lifecycle`: opening, closing and ending sessions (serve and run);
//! - `identity`: which users are restricted outside their sessions too;
//! - `events`: the event kinds, their JSON form and their outputs;
//! - `recorder`: kernel rings -> time order -> session stamp -> outputs
//!   (`exes`: naming the programs that network and disk records carry);
//! - `run`: `restrictd run`, one restricted session around a command;
//! - `daemon`: `restrictd serve`'s core; `service`: its D-Bus front end;
//! - `error`: the core's error type;
//! - `pamconf`: finding PAM lines that would lock out logins without the module;
//! - `pathfilter`: the disk filter's trie entries.
//! - `terminate`: ending a session, or every process of a user.
pub mod binding;
pub mod bpf;
pub mod btf;
pub mod cgroup;
pub mod config;
pub mod controls;
pub mod daemon;
pub mod error;
pub mod events;
pub mod exes;
pub mod identity;
pub mod lifecycle;
pub mod locks;
pub mod pamconf;
pub mod pathfilter;
pub mod policy;
pub mod recorder;
pub mod repeats;
pub mod run;
pub mod service;
pub mod session;
pub mod terminal;
pub mod terminate;
pub mod tracefs;
