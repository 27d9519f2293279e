//! Tracepoint field offsets from tracefs `format` files. They change between
//! kernels (sched_process_fork's layout did in 6.x), so the BPF programs get
//! them at run time instead of compiled-in constants.

use std::{fs, path::PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// The tracefs root, mounting it at /sys/kernel/tracing if nothing is there.
pub fn root() -> Result<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if PathBuf::from(p).join("events").is_dir() {
            return Ok(p.into());
        }
    }
    let p = PathBuf::from("/sys/kernel/tracing");
    nix::mount::mount(
        Some("tracefs"),
        &p,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .context("mounting tracefs at /sys/kernel/tracing (needed to record commands)")?;
    Ok(p)
}

/// Offset of `field` in the record of tracepoint `category/name`.
pub fn field_offset(category: &str, name: &str, field: &str) -> Result<u64> {
    let path = root()?
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_offset(&text, field).ok_or_else(|| anyhow!("{}: no field {field:?}", path.display()))
}

fn parse_offset(format: &str, field: &str) -> Option<u64> {
    format.lines().find_map(|line| {
        // "\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;"
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let ident = decl.split_whitespace().last()?;
        // "char child_comm[16]" is the field child_comm.
        let ident = ident.split('[').next()?;
        if ident != field {
            return None;
        }
        rest.split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:"))
            .and_then(|v| v.parse().ok())
    })
}

/// Checks the one layout the programs assume without a format file: syscall
/// tracepoints put their arguments at offset 16.
pub fn check_syscall_layout() -> Result<()> {
    let off = field_offset("syscalls", "sys_enter_execve", "filename")?;
    if off != 16 {
        bail!("unexpected syscall tracepoint layout (execve filename at {off}, expected 16)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_both_fork_layouts() {
        let new = "name: sched_process_fork\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                   \tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
                   \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_offset(new, "child_pid"), Some(20));
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_offset(old, "child_pid"), Some(44));
        assert_eq!(parse_offset(old, "child_comm"), Some(28));
        assert_eq!(parse_offset(old, "child"), None);
        let exec = "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert_eq!(parse_offset(exec, "filename"), Some(8));
    }
}
