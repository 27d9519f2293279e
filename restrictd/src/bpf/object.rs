//! What the BPF object declares, read from its ELF: the names of its maps
//! and the section of each program (`tracepoint/<category>/<name>`,
//! `cgroup/connect4`, ...). aya keeps the tracepoint a section names to
//! itself, so the loader reads it here rather than from a hand-kept list.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

pub struct ObjectInfo {
    /// Map names (symbols in the `maps` section), in name order.
    pub maps: Vec<String>,
    /// Program name -> its section name.
    pub sections: BTreeMap<String, String>,
}

impl ObjectInfo {
    pub fn parse(elf: &[u8]) -> Result<ObjectInfo> {
        let file = object::File::parse(elf).context("reading the BPF object's ELF")?;
        let mut maps = Vec::new();
        let mut sections = BTreeMap::new();
        for sym in file.symbols() {
            let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
                continue;
            };
            let Ok(section) = file
                .section_by_index(index)
                .and_then(|s| s.name().map(String::from))
            else {
                continue;
            };
            if section == "maps" && !name.is_empty() {
                maps.push(name.to_string());
            } else if sym.kind() == SymbolKind::Text && sym.is_global() && section.contains('/') {
                sections.insert(name.to_string(), section);
            }
        }
        maps.sort();
        maps.dedup();
        Ok(ObjectInfo { maps, sections })
    }

    /// The tracepoints (category, name) a program is attached to: its
    /// section is `tracepoint/<category>/<name>[,<name>...]` (aya reads only
    /// the kind before the first `/`). Empty if it is not a tracepoint
    /// program.
    pub fn tracepoints(&self, program: &str) -> Vec<(&str, &str)> {
        let Some(rest) = self
            .sections
            .get(program)
            .and_then(|s| s.strip_prefix("tracepoint/"))
        else {
            return vec![];
        };
        let Some((category, names)) = rest.split_once('/') else {
            return vec![];
        };
        names
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| (category, n))
            .collect()
    }
}

impl ObjectInfo {
    /// The kernel function a kprobe program is attached to: its section is
    /// `kprobe/<function>`. None if it is not a kprobe program.
    pub fn kprobe_function(&self, program: &str) -> Option<&str> {
        self.sections
            .get(program)
            .and_then(|s| s.strip_prefix("kprobe/"))
            .filter(|f| !f.is_empty())
    }

    /// The tracepoint a BTF tracepoint program is attached to: its section
    /// is `tp_btf/<tracepoint>`.
    pub fn btf_tracepoint(&self, program: &str) -> Option<&str> {
        self.sections
            .get(program)
            .and_then(|s| s.strip_prefix("tp_btf/"))
            .filter(|f| !f.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_names_its_maps_and_tracepoints() {
        let info = ObjectInfo::parse(crate::bpf::OBJECT).unwrap();
        for m in [
            "SESSIONS",
            "ACTIVE",
            "RULES_V4",
            "NETWORK_EVENTS",
            "DISK_EVENTS",
        ] {
            assert!(info.maps.iter().any(|n| n == m), "{m} in {:?}", info.maps);
        }
        assert_eq!(
            info.tracepoints("cmd_exec"),
            [("sched", "sched_process_exec")]
        );
        assert_eq!(
            info.tracepoints("disk_out_open"),
            [
                ("syscalls", "sys_exit_openat"),
                ("syscalls", "sys_exit_openat2"),
                ("syscalls", "sys_exit_open"),
                ("syscalls", "sys_exit_creat")
            ]
        );
        assert!(info.tracepoints("connect4").is_empty());
        assert_eq!(info.sections["connect4"], "cgroup/connect4");
    }
}
