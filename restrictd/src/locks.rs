//! Locks: users and groups locked out now (`restrictctl lock`). A locked
//! identity's sessions end, its processes anywhere on the host are killed,
//! and its logins are refused until the lock expires or is lifted. The list
//! is kept in `locks_file` on persistent storage, so that a lock outlives
//! a restart and a reboot.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::lifecycle::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    User,
    Group,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        match s {
            "user" => Ok(Target::User),
            "group" => Ok(Target::Group),
            _ => Err(format!("lock target {s:?}: expected user or group")),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Target::User => "user",
            Target::Group => "group",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub target: Target,
    pub name: String,
    /// What a refused login is told.
    pub reason: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds; None: until unlocked.
    pub expires: Option<i64>,
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl Lock {
    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// Whether it locks a login of `user` whose groups are `groups`.
    pub fn binds(&self, user: &str, groups: &[String]) -> bool {
        match self.target {
            Target::User => self.name == user,
            Target::Group => groups.contains(&self.name),
        }
    }

    /// "user alice (until 2026-11-22T10:00:00Z): REASON", as a refused
    /// login and `restrictctl locks` show it.
    pub fn describe(&self) -> String {
        let until = match self.expires {
            Some(e) => format!("until {}", rfc3339(e)),
            None => "until unlocked".into(),
        };
        let reason = if self.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", self.reason)
        };
        format!(
            "{} {} is locked {until}{reason}",
            self.target.as_str(),
            self.name
        )
    }
}

/// The most a reason may say (it is shown to users and written to logs).
const MAX_REASON: usize = 512;

pub struct Locks {
    file: PathBuf,
    list: Vec<Lock>,
}

impl Locks {
    /// Reads the kept list; a missing file has none. An unreadable one is
    /// an error: starting without the locks would let locked users in.
    pub fn load(file: &Path) -> Result<Locks> {
        let list = match std::fs::read(file) {
            Ok(d) => serde_json::from_slice(&d).with_context(|| {
                format!(
                    "{}: unreadable lock list (fix or remove it; locks in it are not lifted by a restart)",
                    file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        Ok(Locks {
            file: file.to_path_buf(),
            list,
        })
    }

    fn save(&self) -> Result<()> {
        let data = serde_json::to_vec_pretty(&self.list)?;
        write_atomic(&self.file, &data)
            .with_context(|| format!("saving locks to {}", self.file.display()))
    }

    /// Adds (or replaces) a lock; saved before it is returned, so that it
    /// holds across a restart from the moment it is reported.
    pub fn add(
        &mut self,
        target: Target,
        name: &str,
        ttl: Option<Duration>,
        reason: &str,
    ) -> Result<Lock, String> {
        if name.is_empty() || name.len() > 256 || name.chars().any(|c| c.is_control()) {
            return Err(format!(
                "{} name {name:?} is not a valid name",
                target.as_str()
            ));
        }
        if reason.len() > MAX_REASON || reason.chars().any(|c| c.is_control()) {
            return Err(format!(
                "the reason must be one line of at most {MAX_REASON} bytes"
            ));
        }
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err("--ttl must be more than 0".into());
        }
        let now = now_unix();
        let lock = Lock {
            target,
            name: name.into(),
            reason: reason.into(),
            created: now,
            expires: ttl.map(|t| now + t.as_secs().max(1) as i64),
        };
        let old = self.list.clone();
        self.list
            .retain(|l| !(l.target == target && l.name == name));
        self.list.push(lock.clone());
        if let Err(e) = self.save() {
            self.list = old;
            return Err(format!("{e:#}"));
        }
        Ok(lock)
    }

    /// Lifts a lock; None if there was none.
    pub fn remove(&mut self, target: Target, name: &str) -> Result<Option<Lock>, String> {
        let Some(i) = self
            .list
            .iter()
            .position(|l| l.target == target && l.name == name)
        else {
            return Ok(None);
        };
        let lock = self.list.remove(i);
        if let Err(e) = self.save() {
            self.list.insert(i, lock);
            return Err(format!("{e:#}"));
        }
        Ok(Some(lock))
    }

    /// Drops the locks that have expired and returns them.
    pub fn expire(&mut self) -> Vec<Lock> {
        let now = now_unix();
        let (gone, kept): (Vec<Lock>, Vec<Lock>) =
            self.list.drain(..).partition(|l| l.expired(now));
        self.list = kept;
        if !gone.is_empty() {
            if let Err(e) = self.save() {
                log::error!("{e:#}");
            }
        }
        gone
    }

    /// The lock that refuses a login of `user` in `groups`, if any.
    pub fn binding(&self, user: &str, groups: &[String]) -> Option<&Lock> {
        let now = now_unix();
        self.list
            .iter()
            .find(|l| !l.expired(now) && l.binds(user, groups))
    }

    pub fn all(&self) -> &[Lock] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_kept_replaced_expired_and_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.json");
        let mut l = Locks::load(&file).unwrap();
        l.add(Target::User, "alice", None, "laptop stolen").unwrap();
        l.add(
            Target::Group,
            "contractors",
            Some(Duration::from_secs(3600)),
            "",
        )
        .unwrap();
        l.add(Target::User, "alice", None, "still stolen").unwrap();
        let l = Locks::load(&file).unwrap();
        assert_eq!(l.all().len(), 2);
        assert_eq!(l.binding("alice", &[]).unwrap().reason, "still stolen");
        assert!(l
            .binding("bob", &["contractors".into()])
            .unwrap()
            .describe()
            .starts_with("group contractors is locked until 20"));
        assert!(l.binding("bob", &["staff".into()]).is_none());
        let mut l = l;
        assert!(l.remove(Target::User, "alice").unwrap().is_some());
        assert!(l.remove(Target::User, "alice").unwrap().is_none());
        l.list[0].expires = Some(now_unix() - 1);
        assert!(l.binding("bob", &["contractors".into()]).is_none());
        assert_eq!(l.expire().len(), 1);
        assert!(Locks::load(&file).unwrap().all().is_empty());
    }

    #[test]
    fn bad_input_is_refused_and_a_corrupt_list_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locks.json");
        let mut l = Locks::load(&file).unwrap();
        assert!(l.add(Target::User, "", None, "").is_err());
        assert!(l.add(Target::User, "a\nb", None, "").is_err());
        assert!(l.add(Target::User, "a", None, "two\nlines").is_err());
        assert!(l.add(Target::User, "a", Some(Duration::ZERO), "").is_err());
        assert!(Target::parse("host").is_err());
        std::fs::write(&file, "{not json").unwrap();
        let e = Locks::load(&file).err().unwrap();
        assert!(format!("{e:#}").contains("unreadable lock list"), "{e:#}");
    }
}
