//! Reading the host's PAM configuration for lines that name `pam_restrict.so`
//! and would deny every login once the module file is gone (package removal),
//! and for session stacks where it runs before `pam_systemd.so`.
//!
//! Linux-PAM turns a module that cannot be loaded into `PAM_MODULE_UNKNOWN`
//! and then applies the line's control to it: `required` fails the stack (a
//! leading `-` only silences the log), while `optional`, `sufficient` and a
//! bracket control whose action for `module_unknown` is `ignore` skip it.

use std::{
    fs,
    path::{Path, PathBuf},
};

pub const MODULE: &str = "pam_restrict.so";

/// `required`, except that a missing module is skipped instead of failing.
pub const RECOMMENDED_LINE: &str = "session [success=ok new_authtok_reqd=ok ignore=ignore module_unknown=ignore default=bad] pam_restrict.so";

/// A line that names the module, and whether it survives the module's removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLine {
    pub file: PathBuf,
    /// 1-based number of the line's first physical line.
    pub line: usize,
    pub text: String,
    pub locks_out: bool,
}

/// All lines naming the module in `pam.conf` and the files of `pam.d`.
pub fn scan(pam_conf: &Path, pam_d: &Path) -> std::io::Result<Vec<ModuleLine>> {
    let mut found = Vec::new();
    if let Ok(text) = fs::read_to_string(pam_conf) {
        found.extend(scan_text(pam_conf, &text, true));
    }
    let mut files: Vec<PathBuf> = match fs::read_dir(pam_d) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    for f in files {
        // An unreadable or binary file is not a PAM config PAM can use either.
        if let Ok(text) = fs::read_to_string(&f) {
            found.extend(scan_text(&f, &text, false));
        }
    }
    Ok(found)
}

/// `with_service`: pam.conf lines start with the service name.
pub fn scan_text(file: &Path, text: &str, with_service: bool) -> Vec<ModuleLine> {
    logical_lines(text)
        .into_iter()
        .filter_map(|(line, logical)| {
            let locks_out = judge(&logical, with_service)?;
            Some(ModuleLine {
                file: file.to_path_buf(),
                line,
                text: logical.split_whitespace().collect::<Vec<_>>().join(" "),
                locks_out,
            })
        })
        .collect()
}

/// The logical lines of a PAM file, comments cut, with the 1-based number
/// of each one's first physical line: a trailing backslash continues a
/// line (pam.conf(5)).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut first = 0;
    for (i, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            first = i + 1;
        }
        let raw = raw.split('#').next().unwrap_or_default();
        if let Some(cont) = raw.strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        out.push((first, std::mem::take(&mut logical)));
    }
    out
}

/// A `pam_restrict.so` line that runs before `pam_systemd.so` in a
/// service's session stack: logind then moves the login out of the cgroup
/// restrictd made for it. The session follows its leader into logind's
/// scope (`follow.rs`, `Lifecycle::follow`); the warning says where the
/// line belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderWarning {
    /// The service file whose stack it is.
    pub service: PathBuf,
    /// Where the pam_restrict.so line is (file, 1-based line).
    pub file: PathBuf,
    pub line: usize,
    /// Where the later pam_systemd.so line is.
    pub systemd_file: PathBuf,
    pub systemd_line: usize,
}

/// Every service in `pam_d` whose session stack (with `@include`,
/// `include` and `substack` followed) runs pam_restrict.so before
/// pam_systemd.so.
pub fn order_warnings(pam_d: &Path) -> Vec<OrderWarning> {
    let mut files: Vec<PathBuf> = fs::read_dir(pam_d)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let mut stack = Vec::new();
        session_stack(pam_d, &f, 0, &mut stack);
        let Some(r) = stack.iter().position(|m| m.name == MODULE) else {
            continue;
        };
        if let Some(sd) = stack[r..].iter().find(|m| m.name == "pam_systemd.so") {
            out.push(OrderWarning {
                service: f.clone(),
                file: stack[r].file.clone(),
                line: stack[r].line,
                systemd_file: sd.file.clone(),
                systemd_line: sd.line,
            });
        }
    }
    out
}

/// One module of a session stack, where it is written.
struct StackModule {
    name: String,
    args: Vec<String>,
    file: PathBuf,
    line: usize,
}

/// Where service `service`'s session stack runs `pam_env.so` with
/// `user_readenv=1` before pam_restrict.so: from there on the PAM
/// environment holds what the user wrote in `~/.pam_environment`, so
/// sshd's `SSH_AUTH_INFO_0` and `SSH_CONNECTION` cannot be told from the
/// user's own. (Debian's /etc/pam.d/sshd has such a line.)
pub fn user_env_before(pam_d: &Path, service: &str) -> Option<(PathBuf, usize)> {
    if service.is_empty() || service.contains('/') {
        return None;
    }
    let mut stack = Vec::new();
    session_stack(pam_d, &pam_d.join(service), 0, &mut stack);
    // Not found by name (installed under another file name): every
    // module of the stack may run before it.
    let r = stack
        .iter()
        .position(|m| m.name.ends_with(MODULE))
        .unwrap_or(stack.len());
    stack[..r]
        .iter()
        .find(|m| m.name == "pam_env.so" && m.args.iter().any(|a| a == "user_readenv=1"))
        .map(|m| (m.file.clone(), m.line))
}

/// Appends the session modules of `file`, in order, following includes
/// (at most 8 deep: PAM itself refuses deeper or circular ones).
fn session_stack(pam_d: &Path, file: &Path, depth: usize, out: &mut Vec<StackModule>) {
    if depth > 8 {
        return;
    }
    let Ok(text) = fs::read_to_string(file) else {
        return;
    };
    for (first, logical) in logical_lines(&text) {
        let words: Vec<&str> = logical.split_whitespace().collect();
        let target = |name: &str| match name.starts_with('/') {
            true => PathBuf::from(name),
            false => pam_d.join(name),
        };
        match words.as_slice() {
            ["@include", name, ..] => session_stack(pam_d, &target(name), depth + 1, out),
            [ty, rest @ ..] if ty.trim_start_matches('-') == "session" => {
                // The control is one word or a bracketed list.
                let after = match rest.first() {
                    Some(c) if c.starts_with('[') => {
                        let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
                        &rest[end + 1..]
                    }
                    Some(_) => &rest[1..],
                    None => &[][..],
                };
                let control = rest.first().copied().unwrap_or_default();
                match (control, after.first()) {
                    ("include" | "substack", _) => {
                        if let Some(name) = rest.get(1) {
                            session_stack(pam_d, &target(name), depth + 1, out);
                        }
                    }
                    (_, Some(module)) => out.push(StackModule {
                        name: module.rsplit('/').next().unwrap_or_default().to_string(),
                        args: after[1..].iter().map(|a| a.to_string()).collect(),
                        file: file.to_path_buf(),
                        line: first,
                    }),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// None if the line does not name the module; else whether a missing module
/// would fail the stack.
fn judge(line: &str, with_service: bool) -> Option<bool> {
    let mut rest = line.trim_start();
    if with_service {
        rest = rest.split_once(char::is_whitespace)?.1.trim_start();
    }
    let (_type, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (control, rest) = if let Some(inner) = rest.strip_prefix('[') {
        let (c, r) = inner.split_once(']')?;
        (format!("[{c}]"), r)
    } else {
        let (c, r) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        (c.to_string(), r)
    };
    let module = rest.split_whitespace().next()?;
    if module.rsplit('/').next() != Some(MODULE) {
        return None;
    }
    Some(!survives_missing_module(&control))
}

fn survives_missing_module(control: &str) -> bool {
    match control {
        "optional" | "sufficient" => true,
        "required" | "requisite" => false,
        c => {
            let Some(inner) = c.strip_prefix('[').and_then(|c| c.strip_suffix(']')) else {
                return false;
            };
            let action = |key: &str| {
                inner.split_whitespace().find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k.eq_ignore_ascii_case(key)).then(|| v.to_ascii_lowercase())
                })
            };
            let a = action("module_unknown").or_else(|| action("default"));
            a.as_deref() == Some("ignore")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge_one(line: &str) -> Option<bool> {
        let v = scan_text(Path::new("t"), line, false);
        v.first().map(|m| m.locks_out)
    }

    #[test]
    fn required_locks_out_even_with_dash() {
        assert_eq!(judge_one("session required pam_restrict.so"), Some(true));
        assert_eq!(
            judge_one("-session required pam_restrict.so fail=open"),
            Some(true)
        );
        assert_eq!(
            judge_one("session requisite /lib/security/pam_restrict.so"),
            Some(true)
        );
        assert_eq!(
            judge_one("session [success=ok default=bad] pam_restrict.so"),
            Some(true)
        );
    }

    #[test]
    fn module_unknown_ignore_optional_and_sufficient_survive() {
        assert_eq!(judge_one(RECOMMENDED_LINE), Some(false));
        assert_eq!(judge_one("session optional pam_restrict.so"), Some(false));
        assert_eq!(judge_one("session sufficient pam_restrict.so"), Some(false));
        assert_eq!(
            judge_one("session [default=ignore success=ok] pam_restrict.so"),
            Some(false)
        );
    }

    #[test]
    fn other_lines_comments_and_continuations() {
        assert_eq!(judge_one("session required pam_unix.so"), None);
        assert_eq!(judge_one("# session required pam_restrict.so"), None);
        assert_eq!(judge_one("session required pam_restrict.so.bak"), None);
        assert_eq!(judge_one("@include common-session"), None);
        let v = scan_text(
            Path::new("f"),
            "auth required pam_unix.so\nsession \\\n  required pam_restrict.so\n",
            false,
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].line, 2);
        assert_eq!(v[0].text, "session required pam_restrict.so");
        assert!(v[0].locks_out);
    }

    #[test]
    fn pam_env_reading_the_users_file_before_the_module_is_found() {
        let d = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| fs::write(d.path().join(name), text).unwrap();
        w("common-session", "session optional pam_systemd.so\n");
        // Debian's order: user_readenv=1 before a line at the end.
        w(
            "sshd",
            "@include common-session\nsession required pam_env.so # [1]\nsession required pam_env.so user_readenv=1 envfile=/etc/default/locale\nsession required pam_restrict.so\n",
        );
        // The module first, or pam_env without user_readenv: nothing found.
        w(
            "sshd-first",
            "@include common-session\nsession required pam_restrict.so\nsession required pam_env.so user_readenv=1\n",
        );
        w(
            "sshd-plain",
            "session required pam_env.so\nsession required pam_restrict.so\n",
        );
        assert_eq!(
            user_env_before(d.path(), "sshd"),
            Some((d.path().join("sshd"), 3))
        );
        assert_eq!(user_env_before(d.path(), "sshd-first"), None);
        assert_eq!(user_env_before(d.path(), "sshd-plain"), None);
        assert_eq!(user_env_before(d.path(), "../etc/passwd"), None);
    }

    #[test]
    fn a_line_before_pam_systemd_in_the_session_stack_is_found_through_includes() {
        let d = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| fs::write(d.path().join(name), text).unwrap();
        w(
            "common-session",
            "session [default=1] pam_permit.so\nsession optional pam_systemd.so\n",
        );
        // Before the include that brings pam_systemd: reported.
        w(
            "sshd",
            "@include common-auth\nsession required pam_restrict.so\n@include common-session\n",
        );
        // After it, and in another service with a bracketed control: fine.
        w(
            "login",
            "@include common-session\nsession [success=ok default=bad] pam_restrict.so\n",
        );
        // Through `session include` and a continuation line: reported.
        w(
            "su",
            "session \\\n required pam_restrict.so\nsession include common-session\n",
        );
        let v = order_warnings(d.path());
        let found: Vec<(String, usize, usize)> = v
            .iter()
            .map(|o| {
                let name = o
                    .service
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (name, o.line, o.systemd_line)
            })
            .collect();
        assert_eq!(found, [("sshd".into(), 2, 2), ("su".into(), 1, 2)]);
        assert!(v.iter().all(|o| o.systemd_file.ends_with("common-session")));
    }

    #[test]
    fn pam_conf_lines_have_a_service() {
        let v = scan_text(
            Path::new("pam.conf"),
            "sshd session required pam_restrict.so\nsshd session optional pam_restrict.so\n",
            true,
        );
        assert_eq!(
            v.iter().map(|m| m.locks_out).collect::<Vec<_>>(),
            [true, false]
        );
    }
}
