//! Which file opens become `session.disk` events: path prefixes to include
//! and to exclude, where the longest matching prefix decides and a path that
//! matches none is not recorded. Prefixes match whole path components
//! (`/proc` covers `/proc` and `/proc/1/stat`, not `/process`).
//!
//! The rule entries go into the kernel's `PATH_RULES` LPM trie, which judges
//! every absolute path before anything reaches user space. (A path the
//! kernel could not make absolute is recorded unjudged.)

use restrictd_common::{PATH_EXCLUDE, PATH_INCLUDE, PATH_PREFIX_MAX};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFilter {
    /// (byte prefix, include?) as in the kernel trie.
    entries: Vec<(Vec<u8>, bool)>,
}

impl PathFilter {
    /// `include` and `exclude` are absolute path prefixes. Errors name the
    /// offending prefix and list.
    pub fn new(include: &[String], exclude: &[String]) -> Result<PathFilter, String> {
        let mut entries: Vec<(Vec<u8>, bool)> = Vec::new();
        for (name, list, inc) in [
            ("disk_include", include, true),
            ("disk_exclude", exclude, false),
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
                for f in forms {
                    match entries.iter().find(|(e, _)| *e == f) {
                        Some((_, other)) if *other != inc => {
                            return Err(format!("{p:?} is in both disk_include and disk_exclude"))
                        }
                        Some(_) => {}
                        None => entries.push((f, inc)),
                    }
                }
            }
        }
        Ok(PathFilter { entries })
    }

    /// Trie entries: (prefix bytes, PATH_INCLUDE / PATH_EXCLUDE).
    pub fn trie_entries(&self) -> impl Iterator<Item = (&[u8], u8)> {
        self.entries
            .iter()
            .map(|(p, inc)| (p.as_slice(), if *inc { PATH_INCLUDE } else { PATH_EXCLUDE }))
    }

    /// What the kernel's longest-prefix lookup decides for these entries,
    /// on the NUL-terminated path's first `PATH_PREFIX_MAX` bytes: a model
    /// to test the entries against.
    #[cfg(test)]
    fn records(&self, path: &str) -> bool {
        let mut key = path.as_bytes().to_vec();
        key.push(0);
        key.truncate(PATH_PREFIX_MAX);
        self.entries
            .iter()
            .filter(|(p, _)| key.starts_with(p))
            .max_by_key(|(p, _)| p.len())
            .is_some_and(|(_, inc)| *inc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(inc: &[&str], exc: &[&str]) -> PathFilter {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        PathFilter::new(&s(inc), &s(exc)).unwrap()
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
        assert!(PathFilter::new(&s(&["etc"]), &[]).is_err());
        assert!(PathFilter::new(&s(&["/a"]), &s(&["/a/"])).is_err());
        let long = format!("/{}", "x".repeat(300));
        let e = PathFilter::new(&s(&[&long]), &[]).unwrap_err();
        assert!(e.contains("disk_include"), "{e}");
    }
}
