//! Which file opens become `session.disk` events: path prefixes to include
//! and to exclude, where the longest matching prefix decides and a path that
//! matches none is not recorded. Prefixes match whole path components
//! (`/proc` covers `/proc` and `/proc/1/stat`, not `/process`). Prefixes
//! marked always recorded (`disk_always`) are included and never counted
//! against the rate limit; nothing inside them may be excluded.
//!
//! The rule entries go into the kernel's `PATH_RULES` LPM trie, which judges
//! every absolute path before anything reaches user space. (A path the
//! kernel could not make absolute is recorded unjudged.)

use restrictd_common::{PATH_ALWAYS, PATH_EXCLUDE, PATH_INCLUDE, PATH_PREFIX_MAX};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFilter {
    /// (byte prefix, PATH_INCLUDE / PATH_EXCLUDE / PATH_ALWAYS) as in the
    /// kernel trie.
    entries: Vec<(Vec<u8>, u8)>,
}

impl PathFilter {
    /// `include`, `exclude` and `always` are absolute path prefixes.
    /// Errors name the offending prefix and list.
    pub fn new(
        include: &[String],
        exclude: &[String],
        always: &[String],
    ) -> Result<PathFilter, String> {
        let mut entries: Vec<(Vec<u8>, u8)> = Vec::new();
        for (name, list, inc) in [
            ("disk_always", always, PATH_ALWAYS),
            ("disk_include", include, PATH_INCLUDE),
            ("disk_exclude", exclude, PATH_EXCLUDE),
        ] {
            for p in list {
                let trimmed = p.trim_end_matches('/');
                if !p.starts_with('/') || p.contains('\0') {
                    return Err(format!("{name}: {p:?} is not an absolute path"));
                }
                if trimmed.len() + 2 > PATH_PREFIX_MAX {
                    return Err(format!(
                        "{name}: {p:?} is longer than {} bytes",
                        PATH_PREFIX_MAX - 2
                    ));
                }
                // "/x" matches "/x" itself (NUL-terminated in the kernel) and
                // everything below "/x/"; "/" matches every absolute path.
                let forms: Vec<Vec<u8>> = if trimmed.is_empty() {
                    vec![b"/".to_vec()]
                } else {
                    vec![
                        format!("{trimmed}/").into_bytes(),
                        format!("{trimmed}\0").into_bytes(),
                    ]
                };
                if inc == PATH_EXCLUDE {
                    let key = format!("{trimmed}/");
                    if let Some((a, _)) = entries
                        .iter()
                        .find(|(e, k)| *k == PATH_ALWAYS && key.as_bytes().starts_with(e))
                    {
                        return Err(format!(
                            "{name}: {p:?} is inside always recorded {:?} (disk_always)",
                            String::from_utf8_lossy(a).trim_end_matches(['/', '\0'])
                        ));
                    }
                }
                for f in forms {
                    match entries.iter().find(|(e, _)| *e == f) {
                        Some((_, other)) if *other != inc => {
                            return Err(format!("{name}: {p:?} is also in another list"))
                        }
                        Some(_) => {}
                        None => entries.push((f, inc)),
                    }
                }
            }
        }
        Ok(PathFilter { entries })
    }

    /// Trie entries: (prefix bytes, PATH_INCLUDE / PATH_EXCLUDE / PATH_ALWAYS).
    pub fn trie_entries(&self) -> impl Iterator<Item = (&[u8], u8)> {
        self.entries.iter().map(|(p, k)| (p.as_slice(), *k))
    }

    /// What the kernel's longest-prefix lookup decides for these entries,
    /// on the NUL-terminated path's first `PATH_PREFIX_MAX` bytes: a model
    /// to test the entries against.
    #[cfg(test)]
    fn decides(&self, path: &str) -> Option<u8> {
        let mut key = path.as_bytes().to_vec();
        key.push(0);
        key.truncate(PATH_PREFIX_MAX);
        self.entries
            .iter()
            .filter(|(p, _)| key.starts_with(p))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, k)| *k)
    }

    #[cfg(test)]
    fn records(&self, path: &str) -> bool {
        matches!(self.decides(path), Some(PATH_INCLUDE | PATH_ALWAYS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(inc: &[&str], exc: &[&str]) -> PathFilter {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        PathFilter::new(&s(inc), &s(exc), &[]).unwrap()
    }

    #[test]
    fn longest_prefix_decides_by_component() {
        let d = f(&["/", "/proc/sys/kernel"], &["/proc", "/tmp/"]);
        assert!(d.records("/etc/passwd"));
        assert!(!d.records("/proc"));
        assert!(!d.records("/proc/1/stat"));
        assert!(d.records("/process/x"));
        assert!(d.records("/proc/sys/kernel/hostname"));
        assert!(!d.records("/tmp"));
        assert!(!d.records("/tmp/a"));
        let only = f(&["/home"], &[]);
        assert!(only.records("/home/alice/.bashrc"));
        assert!(!only.records("/etc/passwd"));
        assert!(!only.records("relative"));
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(PathFilter::new(&s(&["etc"]), &[], &[]).is_err());
        assert!(PathFilter::new(&s(&["/a"]), &s(&["/a/"]), &[]).is_err());
        let long = format!("/{}", "x".repeat(300));
        let e = PathFilter::new(&s(&[&long]), &[], &[]).unwrap_err();
        assert!(e.contains("disk_include"), "{e}");
        let e = PathFilter::new(&[], &s(&["/root/.cache"]), &s(&["/root"])).unwrap_err();
        assert_eq!(
            e,
            "disk_exclude: \"/root/.cache\" is inside always recorded \"/root\" (disk_always)"
        );
        assert!(PathFilter::new(&[], &s(&["/root"]), &s(&["/root"])).is_err());
        assert!(PathFilter::new(&[], &s(&["/rootless"]), &s(&["/root"])).is_ok());
    }

    #[test]
    fn always_recorded_paths_beat_shorter_excludes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let d = PathFilter::new(
            &s(&["/"]),
            &s(&["/etc", "/home/alice"]),
            &s(&["/etc/shadow", "/home/alice/.ssh"]),
        )
        .unwrap();
        assert_eq!(d.decides("/etc/shadow"), Some(PATH_ALWAYS));
        assert_eq!(d.decides("/etc/shadow-"), Some(PATH_EXCLUDE));
        assert_eq!(d.decides("/home/alice/.ssh/id_ed25519"), Some(PATH_ALWAYS));
        assert_eq!(d.decides("/home/alice/notes"), Some(PATH_EXCLUDE));
        assert_eq!(d.decides("/usr/bin/ls"), Some(PATH_INCLUDE));
    }
}
