//! Naming files and directories from kernel structs: the walk from a
//! `struct path` up through dentries and mounts to the root, written root
//! first. Offsets come from the load-time configuration (the kernel's BTF).

use aya_ebpf::{
    helpers::generated::{bpf_get_current_task_btf, bpf_probe_read_kernel_str},
    macros::map,
    maps::PerCpuArray,
};
use restrictd_common::{FileId, DIR_DEPTH_MAX, FS_EXCLUDE_MAX, PATH_CAP};

use crate::common::{
    btf_field, current_exe, load_config, read_fields, read_kernel, read_pair, read_ptr,
};

/// Longest name of one path component, with its NUL.
pub const NAME_MAX: u32 = 256;
/// Steps of the walk up to the root: one per directory or mount crossing.
const WALK_STEPS: usize = 2 * DIR_DEPTH_MAX;

/// The names (`d_name.name`) of the directory entries from a path's leaf
/// up to its root (0: a mount crossing).
#[repr(C)]
struct Walk {
    comps: [u64; WALK_STEPS],
    n: u64,
    /// The `struct mount` the last walk started in (0: none since
    /// `forget_walk`), for `path_in_users_mount_ns`.
    mount: u64,
}

#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Writes "<dir>/" at `buf`, where dir is the directory a relative name is
/// resolved against: the cwd (`fd` None) or the file open as `fd` (openat's
/// dirfd). Returns its length, 0 if it cannot be resolved (the name then
/// stays relative).
///
/// # Safety
/// As `fd_path`.
#[inline(always)]
pub unsafe fn dir_prefix(buf: *mut u8, fd: Option<i32>) -> usize {
    match unsafe { fd_path(buf, fd) } {
        Some(p) => {
            unsafe { *buf.add(p & (PATH_CAP - 1)) = b'/' };
            p + 1
        }
        None => 0,
    }
}

/// `&task->fs->pwd` (fd None), or `&task->files->fdt->fd[fd]->f_path`.
#[inline(always)]
fn struct_path(fd: Option<i32>) -> Option<u64> {
    let o = load_config().kernel;
    let Some(fd) = fd else {
        let task = unsafe { bpf_get_current_task_btf() } as u64;
        let fs = read_ptr(task, o.task_fs);
        return (fs != 0).then_some(fs + o.fs_pwd as u64);
    };
    fd_file(fd).map(|file| file + o.file_f_path as u64)
}

/// The current task's `struct file` open as `fd`.
#[inline(always)]
pub fn fd_file(fd: i32) -> Option<u64> {
    let o = load_config().kernel;
    // Direct loads through the task's BTF pointer (`btf_field`), then
    // helper reads past `fdt->fd`, an array the verifier does not type.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let files = unsafe { btf_field::<*const u8>(task, o.task_files) };
    let fdt = unsafe { btf_field::<u64>(files, o.files_fdt) };
    if fdt == 0 || fd < 0 {
        return None;
    }
    // `unsigned int max_fds` then `struct file **fd`: the u32 is the low
    // half of the first word read (x86-64 and arm64 are little-endian).
    let (max, fds) = read_pair(fdt, o.fdtable_max_fds, o.fdtable_fd);
    if fd as u32 >= max as u32 {
        return None;
    }
    let file = read_ptr(fds + 8 * fd as u64, 0);
    (file != 0).then_some(file)
}

/// Whether opens of `file` are left out by what it is (None): a character
/// device (`disk_exclude_devices`) or a file of an excluded filesystem type
/// (`disk_exclude_fs`: proc, sysfs, ...). A property of the file, which no
/// path, bind mount or namespace changes. Else the file's identity (all 0
/// where it cannot be read).
#[inline(always)]
pub fn excluded_by_kind(file: u64) -> Option<FileId> {
    let c = load_config();
    let o = c.kernel;
    let inode = read_ptr(file, o.file_f_inode);
    if inode == 0 {
        return Some(FileId::default());
    }
    // What else is asked of the file (`ALWAYS_FILES`) is read with what
    // this needs: a read costs about the same for 8 bytes or 96.
    let [mode, sb, ino] = read_fields(inode, [o.inode_i_mode, o.inode_i_sb, o.inode_i_ino]);
    if c.disk_exclude_devices != 0 && mode as u16 & S_IFMT == S_IFCHR {
        return None;
    }
    if sb == 0 {
        return Some(FileId::default());
    }
    let [dev, magic] = read_fields(sb, [o.sb_s_dev, o.sb_s_magic]);
    let mut i = 0;
    while i < FS_EXCLUDE_MAX {
        let m = c.disk_exclude_fs[i];
        if m == 0 {
            break;
        }
        if m == magic {
            return None;
        }
        i += 1;
    }
    Some(FileId {
        ino,
        dev: dev as u32,
        _pad: 0,
    })
}

const S_IFMT: u16 = 0o170000;
const S_IFCHR: u16 = 0o020000;

/// The current task's mount namespace (null if unreadable).
#[inline(always)]
fn task_mnt_ns() -> *const u8 {
    let o = load_config().kernel;
    // Direct loads (`btf_field`): a NULL on the way reads as 0.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let nsproxy = unsafe { btf_field::<*const u8>(task, o.task_nsproxy) };
    unsafe { btf_field::<*const u8>(nsproxy, o.nsproxy_mnt_ns) }
}

/// Whether the current task is in a mount namespace that an unprivileged
/// user could have made (one owned by a user namespace below the initial
/// one): there a path can be anything the user bound to it, so path
/// exclusions do not apply.
#[inline(always)]
pub fn in_users_mount_ns() -> bool {
    let o = load_config().kernel;
    let mnt_ns = task_mnt_ns();
    let user_ns = unsafe { btf_field::<*const u8>(mnt_ns, o.mnt_ns_user_ns) };
    if user_ns.is_null() {
        // Unreadable: the stricter answer.
        return true;
    }
    unsafe { btf_field::<i32>(user_ns, o.user_ns_level) != 0 }
}

/// `in_users_mount_ns`, or the path of the last walk (a file's, or the
/// directory a failed open's relative name was joined to) was composed in
/// such a namespace (`walked_in_users_mount_ns`). Only asked of opens the
/// path filter would leave out.
#[inline(always)]
pub fn path_in_users_mount_ns() -> bool {
    in_users_mount_ns() || walked_in_users_mount_ns()
}

/// Whether the last walk's path was composed in a mount namespace that an
/// unprivileged user could have made: a process of the host's namespace
/// can reach another's mounts through `/proc/PID/root` or a passed fd, and
/// a file bound over an excluded path (or over `/usr/bin/ls`) there walks
/// up to that path. A mount of no namespace (detached, `umount -l`) counts
/// as such. False when nothing was walked since `forget_walk` (an absolute
/// name the kernel resolved from the task's root, in the task's namespace).
#[inline(always)]
pub fn walked_in_users_mount_ns() -> bool {
    let Some(walk) = WALK.get_ptr(0) else {
        return true;
    };
    let mount = unsafe { core::ptr::read_volatile(&(*walk).mount) };
    if mount == 0 {
        return false;
    }
    let o = load_config().kernel;
    let ns = read_ptr(mount, o.mount_mnt_ns);
    if ns == task_mnt_ns() as u64 {
        return in_users_mount_ns();
    }
    // Another namespace: the host's own (a service's private one) or a
    // user's. `in_users_mount_ns`'s test, by helper reads: `ns` is not a
    // BTF pointer here.
    let user_ns = if ns == 0 {
        0
    } else {
        read_ptr(ns, o.mnt_ns_user_ns)
    };
    user_ns == 0
        || unsafe { read_kernel((user_ns + o.user_ns_level as u64) as *const i32) }.unwrap_or(1)
            != 0
}

/// Clears what `path_in_users_mount_ns` knows of the last walk, before a
/// record that may not walk.
#[inline(always)]
pub fn forget_walk() {
    if let Some(walk) = WALK.get_ptr_mut(0) {
        unsafe { core::ptr::write_volatile(&mut (*walk).mount, 0) };
    }
}

/// Writes the absolute path of the cwd (`fd` None) or of the file open as
/// `fd` at `buf`, without a trailing slash ("" for "/"); returns its length
/// (at most PATH_CAP - NAME_MAX).
///
/// # Safety
/// `buf` points into a map value with at least PATH_CAP + NAME_MAX bytes.
#[inline(always)]
pub unsafe fn fd_path(buf: *mut u8, fd: Option<i32>) -> Option<usize> {
    unsafe { walk_path(buf, struct_path(fd)?) }
}

/// As `fd_path`, for the program the current task runs (`mm->exe_file`).
///
/// # Safety
/// As `fd_path`.
#[inline(always)]
pub unsafe fn exe_path(buf: *mut u8) -> Option<usize> {
    let exe = current_exe();
    if exe == 0 {
        return None;
    }
    unsafe { file_path(buf, exe) }
}

/// As `fd_path`, for the `struct file` at `file` (one already looked up:
/// the fd table is not walked again).
///
/// # Safety
/// As `fd_path`.
#[inline(always)]
pub unsafe fn file_path(buf: *mut u8, file: u64) -> Option<usize> {
    unsafe { walk_path(buf, file + load_config().kernel.file_f_path as u64) }
}

/// As `fd_path`, for the `struct path` at `path`.
#[inline(always)]
unsafe fn walk_path(buf: *mut u8, path: u64) -> Option<usize> {
    let walk = unsafe { &mut *WALK.get_ptr_mut(0)? };
    let o = load_config().kernel;
    let (mut vfsmnt, mut dentry) = read_pair(path, o.path_mnt, o.path_dentry);
    if vfsmnt == 0 || dentry == 0 {
        return None;
    }
    let mut mount = vfsmnt - o.mount_mnt as u64;
    walk.mount = mount;
    // Read once per mount, not per step.
    let mut root = read_ptr(vfsmnt, o.vfsmount_root);
    let name_off = o.dentry_name + o.qstr_name;
    // Up to the root, leaf first, keeping each entry's name pointer (read
    // with its parent); a mount crossing leaves a 0 slot. One loop counter
    // only, so the verifier's states merge at the loop head.
    let mut i = 0usize;
    let mut done = false;
    while i < WALK_STEPS {
        let mut comp = 0u64;
        if dentry == root {
            let (parent, mountpoint) = read_pair(mount, o.mount_parent, o.mount_mountpoint);
            if parent == mount || parent == 0 {
                done = true;
                break;
            }
            dentry = mountpoint;
            mount = parent;
            vfsmnt = parent + o.mount_mnt as u64;
            root = read_ptr(vfsmnt, o.vfsmount_root);
        } else {
            let (parent, name) = read_pair(dentry, o.dentry_parent, name_off);
            if name == 0 {
                return None;
            }
            if parent == dentry || parent == 0 {
                // A dentry of no directory (a memfd's "memfd:NAME", a
                // pipe's): its own name is the whole path.
                walk.comps[i & (WALK_STEPS - 1)] = name;
                i += 1;
                done = true;
                break;
            }
            comp = name;
            dentry = parent;
        }
        walk.comps[i & (WALK_STEPS - 1)] = comp;
        i += 1;
    }
    if !done {
        return None;
    }
    // Through memory: the verifier then treats the count as unknown instead
    // of exploring the loop below once per possible value.
    walk.n = i as u64;
    let n = unsafe { core::ptr::read_volatile(&walk.n) } as usize;
    // Root first: "/name" per component.
    let mut pos = 0usize;
    let mut j = 0usize;
    while j < WALK_STEPS {
        if j >= n {
            break;
        }
        let name = walk.comps[(n - 1 - j) & (WALK_STEPS - 1)];
        j += 1;
        if name == 0 {
            continue;
        }
        if pos >= PATH_CAP - NAME_MAX as usize {
            return None;
        }
        unsafe { *buf.add(pos & (PATH_CAP - 1)) = b'/' };
        pos += 1;
        let l = unsafe {
            bpf_probe_read_kernel_str(
                buf.add(pos & (PATH_CAP - 1)) as *mut _,
                NAME_MAX,
                name as *const _,
            )
        };
        if l <= 1 {
            return None;
        }
        // Masked though it stays below PATH_CAP: 6.1's verifier loses the
        // bound of a copy of `pos` the compiler spilled before the checks.
        pos = (pos + l as usize - 1) & (PATH_CAP - 1);
    }
    Some(pos)
}
