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

    /// The always recorded paths themselves.
    pub fn always_paths(&self) -> Vec<std::path::PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        self.entries
            .iter()
            .filter(|(_, k)| *k == PATH_ALWAYS)
            .filter_map(|(p, _)| match p.as_slice() {
                b"/" => Some(&p[..]),
                [rest @ .., 0] => Some(rest),
                _ => None,
            })
            .map(|p| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(p)))
            .collect()
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

/// Most files taken from under one always recorded path (`always_files`):
/// a user can fill their own `~/.ssh`, and the kernel's table
/// (`ALWAYS_FILES_MAX`) is shared by every home.
pub const ALWAYS_FILES_PER_PATH: usize = 128;

/// The files and directories under `paths` now (the paths themselves
/// included; symlinks not followed), at most `ALWAYS_FILES_PER_PATH` per
/// path, breadth first, as the kernel identifies them: the kernel then
/// records opens of them whatever path reaches them (a hard link, a
/// renamed directory). Unreadable paths are skipped.
pub fn always_files(paths: &[std::path::PathBuf]) -> Vec<restrictd_common::FileId> {
    use std::os::unix::fs::MetadataExt;
    let id = |m: &std::fs::Metadata| restrictd_common::FileId {
        ino: m.ino(),
        dev: crate::exes::kernel_dev(m.dev()),
        _pad: 0,
    };
    let mut out = Vec::new();
    for root in paths {
        let Ok(meta) = std::fs::symlink_metadata(root) else {
            continue;
        };
        let mut taken = 1;
        out.push(id(&meta));
        let mut dirs = std::collections::VecDeque::new();
        if meta.is_dir() {
            dirs.push_back(root.clone());
        }
        'walk: while let Some(dir) = dirs.pop_front() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if taken >= ALWAYS_FILES_PER_PATH {
                    log::warn!(
                        "{}: more than {ALWAYS_FILES_PER_PATH} files; those past them are recorded by path only (disk_always)",
                        root.display()
                    );
                    break 'walk;
                }
                // DirEntry's metadata is lstat's: a symlink is not followed.
                let Ok(m) = e.metadata() else { continue };
                taken += 1;
                out.push(id(&m));
                if m.is_dir() {
                    dirs.push_back(e.path());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files under an always recorded path are taken by identity, the
    /// path itself and subdirectories included, a symlink as itself (what
    /// it points to is not under the path), and at most
    /// `ALWAYS_FILES_PER_PATH` of them.
    #[test]
    fn always_files_takes_what_is_under_the_paths_by_identity() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir_all(ssh.join("sub")).unwrap();
        std::fs::write(ssh.join("id"), "k").unwrap();
        std::fs::write(ssh.join("sub/deep"), "k").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", ssh.join("link")).unwrap();
        let filter = PathFilter::new(&[], &[], &[ssh.display().to_string()]).unwrap();
        assert_eq!(filter.always_paths(), vec![ssh.clone()]);
        let ids = always_files(&filter.always_paths());
        let has = |p: &std::path::Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            ids.iter().any(|i| i.ino == m.ino())
        };
        for p in [
            &ssh,
            &ssh.join("id"),
            &ssh.join("sub"),
            &ssh.join("sub/deep"),
            &ssh.join("link"),
        ] {
            assert!(has(p), "{} not taken", p.display());
        }
        assert!(!has(std::path::Path::new("/etc/hostname")));
        assert_eq!(ids.len(), 5);
        assert!(always_files(&[dir.path().join("none")]).is_empty());

        let many = dir.path().join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..ALWAYS_FILES_PER_PATH + 10 {
            std::fs::write(many.join(i.to_string()), "").unwrap();
        }
        assert_eq!(always_files(&[many]).len(), ALWAYS_FILES_PER_PATH);
    }

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
