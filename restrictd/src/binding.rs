//! Which policy a login or a user gets, and the kernel entry that says so.
//!
//! A session gets the first `restrictd_policy` whose `match` binds its login
//! (user, groups, source, PAM service, SSH authentication), else the host
//! default. Outside sessions (a restricted identity's cron jobs, other
//! processes, the user's systemd instance) only the user and their groups
//! are known: the user gets the first policy that binds them by those
//! alone (a policy with a source, service or authentication criterion never
//! does), else the host default; whatever their sessions matched.

use std::{collections::HashMap, sync::Arc};

use restrictd_common::{
    SessionEntry, POLICY_FOLLOW_ACTIVE, SESSION_RECORD_COMMANDS, SESSION_RECORD_DISK,
    SESSION_RECORD_NETWORK, SESSION_RECORD_TTY, SESSION_RECORD_TTY_INPUT, SESSION_RESTRICT,
};

use crate::{
    bpf::PolicyIds,
    policy::{Policy, PolicySet, Who},
};

/// The policy set in force and its kernel ids.
#[derive(Clone, Debug, Default)]
pub struct Binding {
    /// Shared with the registry (denial events name policies from it): a
    /// set of 100,000 CIDRs is not copied while logins wait on the locks.
    pub set: Arc<PolicySet>,
    pub ids: PolicyIds,
    /// The recording the host configuration turns on (`SESSION_RECORD_*`).
    pub host_flags: u32,
}

impl Binding {
    pub fn new(set: impl Into<Arc<PolicySet>>, ids: PolicyIds, host_flags: u32) -> Binding {
        Binding {
            set: set.into(),
            ids,
            host_flags,
        }
    }

    /// The policy of a login: its name (None: the host default) and entry.
    pub fn for_login(&self, who: &Who) -> (Option<String>, SessionEntry) {
        let p = self.set.choose(who);
        (p.map(|p| p.name.clone()), self.entry(p))
    }

    /// The policy of a user's processes outside sessions.
    pub fn for_user(&self, user: &str, groups: &[String]) -> (Option<String>, SessionEntry) {
        self.for_login(&Who {
            user: user.to_string(),
            groups: groups.to_vec(),
            ..Default::default()
        })
    }

    /// The entry of a session or identity under per-login policy `p`
    /// (None: the host default, which follows `ACTIVE`).
    pub fn entry(&self, p: Option<&Policy>) -> SessionEntry {
        let mut flags = SESSION_RESTRICT | self.host_flags;
        let Some(p) = p else {
            return SessionEntry {
                policy_id: POLICY_FOLLOW_ACTIVE,
                flags,
                disk_filter: 0,
            };
        };
        if p.unrestricted {
            flags &= !SESSION_RESTRICT;
        }
        // A policy can turn recording off; on only where the host loads the
        // programs (the configuration's switches), which `restrictd check`
        // and the daemon's log point out.
        for (want, bit) in [
            (p.record.commands, SESSION_RECORD_COMMANDS),
            (p.record.network, SESSION_RECORD_NETWORK),
            (p.record.disk, SESSION_RECORD_DISK),
        ] {
            match want {
                Some(false) => flags &= !bit,
                Some(true) => flags |= bit & self.host_flags,
                None => {}
            }
        }
        if let Some(mode) = p.record.terminal {
            let tty = SESSION_RECORD_TTY | SESSION_RECORD_TTY_INPUT;
            flags = (flags & !tty) | (mode.flags() & self.host_flags);
        }
        let policy_id = self.ids.by_name.get(&p.name).copied().unwrap_or(0);
        SessionEntry {
            policy_id,
            flags,
            // Its own disk filter is in the trie under its id.
            disk_filter: if p.record.disk_paths.is_some() {
                policy_id
            } else {
                0
            },
        }
    }

    /// The entry of the policy named `name` (None or unknown: the host
    /// default's).
    pub fn entry_named(&self, name: Option<&str>) -> SessionEntry {
        self.entry(name.and_then(|n| self.set.policies.iter().find(|p| p.name == n)))
    }

    /// The session limits of per-login policy `name` (None: the host
    /// default) over the host's.
    pub fn controls(
        &self,
        name: Option<&str>,
        host: &crate::controls::Controls,
    ) -> crate::controls::Effective {
        name.and_then(|n| self.set.policies.iter().find(|p| p.name == n))
            .map(|p| p.controls)
            .unwrap_or_default()
            .over(host)
    }

    /// Messages about recording a policy asks for that the host does not
    /// load.
    pub fn recording_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.set.policies {
            for (want, bit, what) in [
                (p.record.commands, SESSION_RECORD_COMMANDS, "commands"),
                (p.record.network, SESSION_RECORD_NETWORK, "network"),
                (p.record.disk, SESSION_RECORD_DISK, "disk"),
            ] {
                if want == Some(true) && self.host_flags & bit == 0 {
                    out.push(format!(
                        "{}: policy {:?}: record.{what}: true has no effect while enhanced_recording does not turn {what} events on for the host",
                        p.at, p.name
                    ));
                }
            }
            if let Some(mode) = p.record.terminal {
                if mode.flags() & !self.host_flags != 0 {
                    out.push(format!(
                        "{}: policy {:?}: record.terminal: {} records only what the host's terminal_recording loads ({})",
                        p.at,
                        p.name,
                        mode.name(),
                        host_terminal(self.host_flags)
                    ));
                }
            }
        }
        out
    }
}

/// The names of `user`'s groups, primary and supplementary (NSS); empty
/// when the user is unknown.
pub fn groups_of(user: &str) -> Vec<String> {
    let Ok(Some(u)) = nix::unistd::User::from_name(user) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user) else {
        return Vec::new();
    };
    let gids = nix::unistd::getgrouplist(&name, u.gid).unwrap_or_else(|_| vec![u.gid]);
    let mut names: Vec<String> = gids
        .into_iter()
        .filter_map(|g| nix::unistd::Group::from_gid(g).ok().flatten())
        .map(|g| g.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Per-uid memo of `groups_of` for one re-evaluation pass.
#[derive(Default)]
pub struct GroupCache(HashMap<String, Vec<String>>);

impl GroupCache {
    pub fn get(&mut self, user: &str) -> Vec<String> {
        self.0
            .entry(user.to_string())
            .or_insert_with(|| groups_of(user))
            .clone()
    }
}

/// The host's `terminal_recording`, from its session flags.
fn host_terminal(flags: u32) -> &'static str {
    if flags & SESSION_RECORD_TTY_INPUT != 0 {
        "input_output"
    } else if flags & SESSION_RECORD_TTY != 0 {
        "output"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::TerminalMode, policy::Strictness};

    fn binding(terminal: &str, host: TerminalMode) -> Binding {
        let text = format!(
            "kind: restrictd_policy\nversion: v1\nmetadata:\n  name: p\nspec:\n  match:\n    users: [alice]\n  \
             record:\n    terminal: {terminal}\n  allow:\n    - cidr: 127.0.0.0/8\n"
        );
        let set = PolicySet::parse_with(&text, "p.yaml", Strictness::Teleport).unwrap();
        Binding::new(set, PolicyIds::default(), SESSION_RESTRICT | host.flags())
    }

    fn terminal_flags(b: &Binding) -> u32 {
        b.entry_named(Some("p")).flags & (SESSION_RECORD_TTY | SESSION_RECORD_TTY_INPUT)
    }

    #[test]
    fn a_policys_terminal_recording_lowers_or_raises_within_the_hosts() {
        let off = binding("off", TerminalMode::InputOutput);
        assert_eq!(terminal_flags(&off), 0);
        assert!(off.recording_warnings().is_empty());
        let all = binding("input_output", TerminalMode::InputOutput);
        assert_eq!(
            terminal_flags(&all),
            SESSION_RECORD_TTY | SESSION_RECORD_TTY_INPUT
        );
        // The host loads only the output programs: input is not recorded,
        // and that is said.
        let more = binding("input_output", TerminalMode::Output);
        assert_eq!(terminal_flags(&more), SESSION_RECORD_TTY);
        let w = more.recording_warnings();
        assert!(
            w.len() == 1
                && w[0].contains("record.terminal: input_output")
                && w[0].contains("(output)"),
            "{w:?}"
        );
        // The host default follows the host's setting.
        assert_eq!(more.entry_named(None).flags & SESSION_RECORD_TTY_INPUT, 0);
    }

    #[test]
    fn a_bad_terminal_mode_is_an_error_naming_it() {
        let text = "kind: restrictd_policy\nversion: v1\nmetadata:\n  name: p\nspec:\n  match:\n    users: [alice]\n  \
             record:\n    terminal: keystrokes\n";
        let e = PolicySet::parse_with(text, "p.yaml", Strictness::Teleport)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.yaml:") && e.contains("keystrokes"), "{e}");
    }
}
