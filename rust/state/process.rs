//! Who holds a word of the zone (its writer lock, a worker record): a process's identity, its
//! pid and its start time (clock ticks after boot, from `/proc/<pid>/stat`). A pid the kernel
//! gave to a new process after the holder died is then not taken for the holder, which would
//! keep a dead worker's slots counted, or the lock held, for as long as the stranger runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Linux's pid_max is at most 2^22.
const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;

/// This process's identity (found again after a fork).
pub(super) fn me() -> u64 {
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let pid = u64::from(std::process::id());
    let cached = CACHED.load(Relaxed);
    if cached != 0 && cached & PID_MASK == pid {
        return cached;
    }
    let identity = identity_of(pid).unwrap_or(pid);
    CACHED.store(identity, Relaxed);
    identity
}

/// Whether the process an identity names still runs: its pid exists and, when the identity
/// carries a start time (a bare pid does not), that pid's process started then.
pub(super) fn alive(identity: u64) -> bool {
    if identity >> PID_BITS == 0 {
        return pid_exists(identity);
    }
    let pid = identity & PID_MASK;
    if !pid_exists(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => identity_in(&stat, pid) == Some(identity),
        // Gone between the two looks; any other failure to read (no descriptors left, say)
        // proves nothing, and a live holder taken for dead would lose its lock or its slots.
        Err(err) => err.kind() != std::io::ErrorKind::NotFound,
    }
}

fn identity_of(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    identity_in(&stat, pid)
}

/// The identity of `pid` from the text of its `/proc/<pid>/stat`.
fn identity_in(stat: &str, pid: u64) -> Option<u64> {
    // Fields after the command, which is in parentheses and may hold spaces or parentheses.
    let fields = &stat[stat.rfind(')')? + 1..];
    // starttime is field 22; the first after the command is field 3.
    let start: u64 = fields.split_ascii_whitespace().nth(22 - 3)?.parse().ok()?;
    Some((start + 1) << PID_BITS | pid)
}

fn pid_exists(pid: u64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let answer = unsafe { libc::kill(pid, 0) };
    answer == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_reused_by_another_process_is_not_the_holder() {
        let mine = me();
        assert_eq!(mine & PID_MASK, u64::from(std::process::id()));
        assert!(mine >> PID_BITS > 0, "this process's start time is known");
        assert!(alive(mine));
        // The same pid with another start time: a process that held it before, now dead.
        assert!(!alive(mine + (1 << PID_BITS)));
        // A bare pid is checked for existence only.
        assert!(alive(u64::from(std::process::id())));
        assert!(!alive(u64::from(i32::MAX as u32 - 1)));
    }

    #[test]
    fn a_child_has_an_identity_of_its_own() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let identity = identity_of(u64::from(child.id())).unwrap();
        assert!(alive(identity) && identity != me());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(identity));
    }
}
