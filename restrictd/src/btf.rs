//! Kernel struct layouts from the running kernel's BTF (/sys/kernel/btf/vmlinux).
//!
//! BPF programs written in Rust get no CO-RE relocations, so the few kernel
//! struct fields they touch are located here at load time and handed to them
//! as read-only constants. aya parses BTF too, but keeps type lookups
//! private; this reader does only what restrictd needs: a member's byte
//! offset in a named struct, looking through anonymous struct/union members.
//! Format: Documentation/bpf/btf.rst.

use anyhow::{anyhow, bail, Context, Result};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// size, or the referenced type id.
    size_type: u32,
    /// (name_off, type id, bit offset) for structs and unions.
    members: Vec<(u32, u32, u32)>,
}

pub struct Btf {
    /// Index = type id; id 0 is `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| anyhow!("truncated BTF at byte {at}"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        let data = std::fs::read(VMLINUX_BTF).with_context(|| {
            format!(
                "reading {VMLINUX_BTF} (restrictd needs a kernel built with CONFIG_DEBUG_INFO_BTF)"
            )
        })?;
        Btf::parse(&data).with_context(|| format!("parsing {VMLINUX_BTF}"))
    }

    pub fn parse(data: &[u8]) -> Result<Btf> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or_else(|| anyhow!("BTF section out of bounds"))
        };
        let tdata = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            size_type: 0,
            members: vec![],
        }];
        let mut at = 0;
        while at < tdata.len() {
            let name_off = u32_at(tdata, at)?;
            let info = u32_at(tdata, at + 4)?;
            let size_type = u32_at(tdata, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let mut members = vec![];
            // Bytes of kind-specific data after the common header.
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        members.push((
                            u32_at(tdata, m)?,
                            u32_at(tdata, m + 4)?,
                            u32_at(tdata, m + 8)?,
                        ));
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,   // enum, func_proto
                15 | 19 => vlen * 12, // datasec, enum64
                2 | 7..=12 | 16 | 18 => 0,
                k => bail!("unknown BTF kind {k} (type {})", types.len()),
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                kind_flag: info >> 31 == 1,
                size_type,
                members,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_type
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `member` in `struct name`.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let id = self
            .types
            .iter()
            .position(|t| {
                t.kind == KIND_STRUCT
                    && !t.members.is_empty()
                    && self.name(t.name_off) == name.as_bytes()
            })
            .ok_or_else(|| anyhow!("kernel BTF has no struct {name}"))?;
        let bits = self
            .find_member(id as u32, member.as_bytes(), 0)
            .ok_or_else(|| anyhow!("kernel BTF: struct {name} has no member {member}"))?;
        if bits % 8 != 0 {
            bail!("kernel BTF: {name}.{member} is a bit field");
        }
        Ok(bits / 8)
    }

    /// Everything the disk programs need to resolve a directory's path.
    pub fn kernel_offsets(&self) -> Result<restrictd_common::KernelOffsets> {
        let m = |s: &str, f: &str| self.member_offset(s, f);
        // io_uring's opens, all or nothing (a kernel without io_uring, or
        // one whose layout differs, gets none: those opens are then not
        // recorded, as the README says of kernels without them).
        let uring = (|| -> Result<[u32; 5]> {
            Ok([
                m("io_kiocb", "opcode")?,
                m("io_kiocb", "cmd")?,
                m("io_open", "dfd")?,
                m("io_open", "filename")?,
                m("io_open", "how")?,
            ])
        })()
        .ok()
        // The program reads `filename->name` as the struct's first word.
        .filter(|u| u[3] != 0 && m("filename", "name").is_ok_and(|o| o == 0))
        .unwrap_or([0; 5]);
        Ok(restrictd_common::KernelOffsets {
            task_fs: m("task_struct", "fs")?,
            task_files: m("task_struct", "files")?,
            fs_pwd: m("fs_struct", "pwd")?,
            files_fdt: m("files_struct", "fdt")?,
            fdtable_fd: m("fdtable", "fd")?,
            fdtable_max_fds: m("fdtable", "max_fds")?,
            file_f_path: m("file", "f_path")?,
            path_mnt: m("path", "mnt")?,
            path_dentry: m("path", "dentry")?,
            mount_mnt: m("mount", "mnt")?,
            mount_parent: m("mount", "mnt_parent")?,
            mount_mountpoint: m("mount", "mnt_mountpoint")?,
            mount_mnt_ns: m("mount", "mnt_ns")?,
            vfsmount_root: m("vfsmount", "mnt_root")?,
            dentry_parent: m("dentry", "d_parent")?,
            dentry_name: m("dentry", "d_name")?,
            qstr_name: m("qstr", "name")?,
            // Only with CONFIG_AUDIT; without it, identities match by uid.
            task_loginuid: m("task_struct", "loginuid").unwrap_or(0),
            file_f_inode: m("file", "f_inode")?,
            inode_i_mode: m("inode", "i_mode")?,
            inode_i_sb: m("inode", "i_sb")?,
            sb_s_magic: m("super_block", "s_magic")?,
            task_nsproxy: m("task_struct", "nsproxy")?,
            nsproxy_mnt_ns: m("nsproxy", "mnt_ns")?,
            mnt_ns_user_ns: m("mnt_namespace", "user_ns")?,
            user_ns_level: m("user_namespace", "level")?,
            task_mm: m("task_struct", "mm")?,
            mm_exe_file: m("mm_struct", "exe_file")?,
            inode_i_ino: m("inode", "i_ino")?,
            inode_i_nlink: m("inode", "i_nlink")?,
            sb_s_dev: m("super_block", "s_dev")?,
            task_real_parent: m("task_struct", "real_parent")?,
            task_tgid: m("task_struct", "tgid")?,
            // Only with CONFIG_AUDIT, as loginuid.
            task_sessionid: m("task_struct", "sessionid").unwrap_or(0),
            inode_i_rdev: m("inode", "i_rdev")?,
            file_private_data: m("file", "private_data")?,
            // 0 where the kernel's BTF lacks them: terminals are then not
            // recorded, and the daemon says so.
            tty_file_private_tty: m("tty_file_private", "tty").unwrap_or(0),
            tty_index: m("tty_struct", "index").unwrap_or(0),
            tty_winsize: m("tty_struct", "winsize").unwrap_or(0),
            io_kiocb_opcode: uring[0],
            io_kiocb_cmd: uring[1],
            io_open_dfd: uring[2],
            io_open_filename: uring[3],
            io_open_how: uring[4],
            task_cgroups: m("task_struct", "cgroups")?,
            css_set_dfl_cgrp: m("css_set", "dfl_cgrp")?,
            cgroup_kn: m("cgroup", "kn")?,
            kernfs_node_id: m("kernfs_node", "id")?,
            task_cred: m("task_struct", "cred")?,
            cred_uid: m("cred", "uid")?,
            // x86-64 only: `exit_syscall` reads x86-64 registers and ia32
            // syscall numbers. Elsewhere 0, and it is not attached.
            task_ti_status: if cfg!(target_arch = "x86_64") {
                m("task_struct", "thread_info")
                    .and_then(|t| Ok(t + m("thread_info", "status")?))
                    .unwrap_or(0)
            } else {
                0
            },
            task_nr_migrations: m("task_struct", "se")? + m("sched_entity", "nr_migrations")?,
            task_comm: m("task_struct", "comm")?,
        })
    }

    /// Bit offset of `member` in type `id`, searching anonymous members too.
    fn find_member(&self, id: u32, member: &[u8], depth: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for &(name_off, ty, off) in &t.members {
            // With kind_flag, the low 24 bits are the offset (the rest: bit-field size).
            let bits = if t.kind_flag { off & 0xff_ffff } else { off };
            let n = self.name(name_off);
            if n == member {
                return Some(bits);
            }
            if n.is_empty() {
                if let Some(inner) = self.find_member(self.resolve(ty), member, depth + 1) {
                    return Some(bits + inner);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bits_offset of a direct member, as bpftool (libbpf's reader) prints it.
    fn bpftool_offset(strukt: &str, member: &str) -> u32 {
        let out = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX_BTF])
            .output()
            .expect("bpftool (scripts/setup.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout);
        let head = format!("STRUCT '{strukt}' ");
        let mut lines = text
            .lines()
            .skip_while(|l| !(l.starts_with('[') && l.contains(&head)));
        lines.next().expect("struct in bpftool output");
        let line = lines
            .take_while(|l| l.starts_with('\t'))
            .find(|l| l.trim_start().starts_with(&format!("'{member}' ")))
            .expect("member in bpftool output");
        line.rsplit("bits_offset=").next().unwrap().parse().unwrap()
    }

    #[test]
    fn offsets_agree_with_bpftool() {
        let btf = Btf::from_sys_fs().unwrap();
        for (s, m) in [
            ("file", "f_flags"),
            ("path", "dentry"),
            ("task_struct", "fs"),
            ("super_block", "s_magic"),
            ("mnt_namespace", "user_ns"),
            ("user_namespace", "level"),
            ("io_open", "filename"),
            ("io_open", "how"),
        ] {
            assert_eq!(
                btf.member_offset(s, m).unwrap() * 8,
                bpftool_offset(s, m),
                "{s}.{m}"
            );
        }
        // f_path sits in an anonymous union on recent kernels; it must still be found.
        let f_path = btf.member_offset("file", "f_path").unwrap();
        assert!(f_path > 0 && f_path < 512, "{f_path}");
        assert!(btf.member_offset("file", "no_such_member").is_err());
        assert!(btf.member_offset("no_such_struct", "x").is_err());
        btf.kernel_offsets().unwrap();
    }
}
