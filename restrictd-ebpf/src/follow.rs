//! A session follows its leader across cgroup moves made by others.
//!
//! sshd's `[priv]` process is the session's leader: restrictd puts it into
//! the session's cgroup during `pam_open_session`. A PAM module after
//! pam_restrict.so may move it again: pam_systemd has logind move it into
//! `session-N.scope`, which no login registered. The kernel reports every
//! move (`cgroup/cgroup_attach_task`, in the mover's context, after the
//! move and before the mover's write returns); when the moved process is a
//! session leader, its new cgroup gets the session's entry at once, so the
//! user's shell, forked from `[priv]` later, starts restricted wherever the
//! PAM stack put `[priv]`. The daemon then takes the new cgroup over as the
//! session's (`Lifecycle::follow`).

use aya_ebpf::{macros::map, macros::tracepoint, maps::HashMap, programs::TracePointContext};
use restrictd_common::MAX_LEADERS;

use crate::common::{ctx_field, load_config, raise_generation, SESSIONS};

/// Session leaders (tgid in the initial pid namespace) -> the cgroup id
/// their session is registered under; written by the daemon from login to
/// logout.
#[map]
static LEADERS: HashMap<u32, u64> = HashMap::with_max_entries(LEADERS_MAX, 0);

/// The VM tests build a second object with another map layout (this map
/// one entry larger), to upgrade to and downgrade from under a session.
const LEADERS_MAX: u32 = match option_env!("RESTRICTD_TEST_LAYOUT") {
    Some(_) => MAX_LEADERS + 1,
    None => MAX_LEADERS,
};

/// `BPF_NOEXIST`: a cgroup already registered keeps its entry.
const NOEXIST: u64 = 1;

#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn follow_attach(ctx: TracePointContext) -> u32 {
    let c = load_config();
    // Hierarchy 0 is cgroup v2's (cgroup v1 hierarchies report here too).
    if ctx_field::<i32>(&ctx, c.attach_dst_root_offset) != Some(0) {
        return 0;
    }
    let Some(pid) = ctx_field::<i32>(&ctx, c.attach_pid_offset) else {
        return 0;
    };
    let Some(&from) = (unsafe { LEADERS.get(pid as u32) }) else {
        return 0;
    };
    let Some(&entry) = (unsafe { SESSIONS.get(from) }) else {
        return 0;
    };
    if let Some(dst) = ctx_field::<u64>(&ctx, c.attach_dst_id_offset) {
        if dst != from && SESSIONS.insert(dst, entry, NOEXIST).is_ok() {
            raise_generation();
        }
    }
    0
}
