//! Restricted identities: users whose processes are restricted and recorded
//! outside their SSH sessions too (cron and at jobs, user services, logins
//! without the PAM line, anything they start or reach from a session).
//!
//! Who: every user who logs in through the PAM line, from that first login
//! on, plus `identities.users`; never root, never accounts outside the
//! login.defs range of regular users (UID_MIN..=UID_MAX), never a user in
//! `identities.exempt_users` or a member of `identities.exempt_groups`. The
//! list is kept in `identities.state_file` (on persistent storage), so that
//! a job planted during a session is restricted after a reboot as soon as
//! restrictd starts, which the systemd unit orders before cron, atd and user
//! logins. The kernel matches a process by its uid and its audit login uid,
//! and a socket by its owner (`restrictd-ebpf/src/common.rs`, `skb.rs`).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::{config::IdentityConfig, lifecycle::write_atomic};

/// login.defs defaults (shadow-utils) for regular users.
const UID_MIN: u32 = 1000;
const UID_MAX: u32 = 60000;

/// One restricted identity, as kept in the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub user: String,
    /// RFC 3339: when it became restricted.
    pub since: String,
    /// "login" (first login through the PAM line) or "config".
    pub reason: String,
}

pub struct Identities {
    config: IdentityConfig,
    uid_range: (u32, u32),
    state_file: PathBuf,
    known: BTreeMap<u32, Identity>,
    /// The state file could not be parsed (moved aside): the kernel's list
    /// is the best record left (`adopt`).
    lost_state: bool,
}

impl Identities {
    /// Reads the kept list and the configured users; drops entries that
    /// the configuration now exempts (the admin's decision wins).
    pub fn load(config: &IdentityConfig) -> Result<Identities> {
        let mut ids = Identities {
            config: config.clone(),
            uid_range: uid_range(Path::new("/etc/login.defs")),
            state_file: config.state_file.clone(),
            known: BTreeMap::new(),
            lost_state: false,
        };
        if !config.enabled {
            return Ok(ids);
        }
        match fs::read(&ids.state_file) {
            Ok(data) => {
                // A corrupt list must neither stop the daemon (every login
                // would be refused) nor free anyone: it is kept for a look,
                // and the kernel's list (`adopt`) stands in for it.
                let list: Vec<Identity> = match serde_json::from_slice(&data) {
                    Ok(l) => l,
                    Err(e) => {
                        let aside = ids.state_file.with_extension("json.corrupt");
                        let kept = fs::rename(&ids.state_file, &aside)
                            .map(|_| format!("moved to {}", aside.display()))
                            .unwrap_or_else(|e| format!("could not be moved aside: {e}"));
                        log::error!(
                            "{}: unreadable list of restricted identities ({e}); {kept}; \
                             keeping the identities restricted in the kernel",
                            ids.state_file.display()
                        );
                        ids.lost_state = true;
                        Vec::new()
                    }
                };
                for i in list {
                    if let Err(why) = ids.eligible(i.uid, &i.user) {
                        log::info!(
                            "user {} (uid {}) no longer restricted: {why}",
                            i.user,
                            i.uid
                        );
                        continue;
                    }
                    ids.known.insert(i.uid, i);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", ids.state_file.display()))
            }
        }
        for name in &config.users {
            let Some(uid) = uid_of(name) else {
                log::warn!("identities.users: no user {name:?} on this host");
                continue;
            };
            if let Err(why) = ids.eligible(uid, name) {
                log::warn!("identities.users: {name} is not restricted: {why}");
                continue;
            }
            ids.known.entry(uid).or_insert_with(|| Identity {
                uid,
                user: name.clone(),
                since: now(),
                reason: "config".into(),
            });
        }
        ids.save_or_log();
        Ok(ids)
    }

    /// True when the state file was unreadable at load.
    pub fn lost_state(&self) -> bool {
        self.lost_state
    }

    /// Takes `uids` (what the kernel still restricts) into the list, after
    /// the state file was lost.
    pub fn adopt(&mut self, uids: &[u32]) {
        for &uid in uids {
            let user = crate::session::user_name(uid);
            if self.eligible(uid, &user).is_err() {
                continue;
            }
            self.known.entry(uid).or_insert_with(|| Identity {
                uid,
                user,
                since: now(),
                reason: "kernel (state file was unreadable)".into(),
            });
        }
        self.save_or_log();
    }

    /// A list that cannot be saved (state directory full or read-only)
    /// still restricts in the kernel; it is saved again with the next
    /// change. Refusing logins for it would lock users out for a disk.
    fn save_or_log(&self) {
        if let Err(e) = self.save() {
            log::error!(
                "{e:#}; the restriction holds until a reboot, and is saved with the next change"
            );
        }
    }

    /// The uids to restrict in the kernel.
    pub fn uids(&self) -> Vec<u32> {
        self.known.keys().copied().collect()
    }

    fn list(&self) -> Vec<Identity> {
        self.known.values().cloned().collect()
    }

    /// A login through the PAM line: true when `uid` is newly restricted
    /// (the caller registers it in the kernel before the login proceeds).
    pub fn admit(&mut self, uid: u32, user: &str) -> Result<bool> {
        if !self.config.enabled || self.known.contains_key(&uid) {
            return Ok(false);
        }
        if let Err(why) = self.eligible(uid, user) {
            log::debug!("{user} (uid {uid}) not restricted by identity: {why}");
            return Ok(false);
        }
        self.known.insert(
            uid,
            Identity {
                uid,
                user: user.into(),
                since: now(),
                reason: "login".into(),
            },
        );
        self.save_or_log();
        Ok(true)
    }

    /// Why `uid` must not be restricted by identity, if it must not.
    fn eligible(&self, uid: u32, user: &str) -> Result<(), String> {
        let (min, max) = self.uid_range;
        if uid == 0 {
            return Err("root is never restricted by identity".into());
        }
        if uid < min || uid > max {
            return Err(format!(
                "uid outside the regular users' range {min}..={max} (login.defs)"
            ));
        }
        if self.config.exempt_users.iter().any(|u| u == user) {
            return Err("in identities.exempt_users".into());
        }
        if let Some(g) = self
            .config
            .exempt_groups
            .iter()
            .find(|g| in_group(user, uid, g))
        {
            return Err(format!("member of exempt group {g}"));
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let data = serde_json::to_vec_pretty(&self.list())?;
        write_atomic(&self.state_file, &data).with_context(|| {
            format!(
                "saving restricted identities to {}",
                self.state_file.display()
            )
        })
    }
}

fn now() -> String {
    crate::events::boot_ns_to_rfc3339(crate::events::now_boot_ns())
}

fn uid_of(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// Whether `user` is in group `group`, as its primary group or a
/// supplementary one.
fn in_group(user: &str, uid: u32, group: &str) -> bool {
    use nix::unistd::{getgrouplist, Group, User};
    let Ok(Some(g)) = Group::from_name(group) else {
        return false;
    };
    let Ok(Some(u)) = User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user) else {
        return false;
    };
    getgrouplist(&name, u.gid)
        .map(|gs| gs.contains(&g.gid))
        .unwrap_or(false)
}

/// UID_MIN and UID_MAX from login.defs (the shadow-utils defaults where
/// the file or a key is missing).
pub(crate) fn uid_range(login_defs: &Path) -> (u32, u32) {
    let text = fs::read_to_string(login_defs).unwrap_or_default();
    let key = |k: &str, default: u32| {
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(k)).then(|| w.next()).flatten()
            })
            .filter_map(|v| v.parse().ok())
            .next_back()
            .unwrap_or(default)
    };
    (key("UID_MIN", UID_MIN), key("UID_MAX", UID_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_list_is_moved_aside_and_the_kernels_stands_in() {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("identities.json");
        let config = IdentityConfig {
            state_file: state_file.clone(),
            ..IdentityConfig::default()
        };
        fs::write(&state_file, "[{\"uid\": 1000,").unwrap();
        let mut ids = Identities::load(&config).expect("a truncated list does not stop the daemon");
        assert!(ids.lost_state());
        assert_eq!(
            fs::read_to_string(dir.path().join("identities.json.corrupt")).unwrap(),
            "[{\"uid\": 1000,"
        );
        let (min, _) = uid_range(Path::new("/etc/login.defs"));
        // What the kernel still restricts; root never is.
        ids.adopt(&[0, min]);
        assert_eq!(ids.uids(), [min]);
        assert!(fs::read_to_string(&state_file)
            .unwrap()
            .contains(&format!("\"uid\": {min}")));
        // Root and system accounts in the file are dropped, a regular uid kept.
        let list = format!(
            "[{{\"uid\":0,\"user\":\"root\",\"since\":\"t\",\"reason\":\"login\"}},\
             {{\"uid\":1,\"user\":\"daemon\",\"since\":\"t\",\"reason\":\"login\"}},\
             {{\"uid\":{min},\"user\":\"u\",\"since\":\"t\",\"reason\":\"login\"}}]"
        );
        fs::write(&state_file, list).unwrap();
        let ids = Identities::load(&config).unwrap();
        assert_eq!(ids.uids(), [min]);
    }

    #[test]
    fn login_defs_range_with_defaults_for_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("login.defs");
        fs::write(&p, "# UID_MIN 5\nUID_MIN\t\t 2000\nMAIL_DIR /var/mail\n").unwrap();
        assert_eq!(uid_range(&p), (2000, UID_MAX));
        assert_eq!(uid_range(&dir.path().join("none")), (UID_MIN, UID_MAX));
    }
}
