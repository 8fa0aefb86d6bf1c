"""Everything the local jail allows or denies, in one table a reviewer can audit in one read.

The bwrap arguments for masks and read-only kernel interfaces, the seccomp filter, the host
identity and the limits are all *built from* the constants below (nothing about isolation is
decided elsewhere), and `toolrail sandbox policy` prints them. Modelled on Docker's default
OCI spec (masked / read-only paths) and its default seccomp profile (denied syscalls).

Who runs the jail: when toolrail runs as root, bubblewrap is started under an unprivileged host
uid/gid (65534 by default, `TOOLRAIL_SANDBOX_HOST_UID` / `--sandbox-uid`), after the root-only
setup (cgroup join, rlimits); the code inside still sees uid 1000. Without root nothing changes:
the jail runs under the caller's own uid, which is already unprivileged.
"""

from __future__ import annotations

import errno
import functools
import os
from dataclasses import dataclass

# --- identity ---------------------------------------------------------------------------------

SANDBOX_UID = 1000  # what the code inside sees (uid and gid)
DEFAULT_HOST_UID = 65534  # `nobody` on Debian: who the jail is on the host when toolrail is root
HOST_UID_ENV = "TOOLRAIL_SANDBOX_HOST_UID"  # "UID" or "UID:GID"

# --- mounts -----------------------------------------------------------------------------------

SCRATCH = "/scratch"
# (path inside the jail, what is there). Read-only unless the second column says tmpfs.
MOUNTS: tuple[tuple[str, str], ...] = (
    ("/", "empty tmpfs, remounted read-only"),
    ("/usr, /bin, /sbin, /lib*", "host's, bound read-only"),
    ("python prefix", "host's interpreter install, bound read-only"),
    ("/etc/passwd, group, hosts", "generated (sandbox user, localhost), read-only"),
    ("/etc/ld.so.cache, localtime", "host's, read-only"),
    ("/opt/toolrail/driver.py", "the in-jail driver, read-only copy"),
    ("/proc", "the jail's own (new pid namespace)"),
    ("/dev", "minimal (null, zero, random, urandom, tty, shm), read-only"),
    (SCRATCH, "tmpfs, size-capped (scratch_bytes), writable"),
    ("/tmp, /dev/shm", "tmpfs, size-capped, writable"),
    ("/sys", "absent (not mounted)"),
    ("everything else", "absent (home, /work, /root, host /etc, sockets)"),
)

# Docker's default `readonlyPaths`: kernel knobs that must never be writable from a jail.
READ_ONLY_PROC: tuple[str, ...] = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
# Docker's default `maskedPaths`: files that leak host state; bound over with /dev/null.
MASKED_FILES: tuple[str, ...] = (
    "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats", "/proc/timer_stats",
)
# ... and directories, covered with an empty read-only tmpfs. (/sys/firmware: /sys is absent.)
MASKED_DIRS: tuple[str, ...] = ("/proc/acpi", "/proc/scsi")

# --- syscalls ---------------------------------------------------------------------------------

DENIED_ERRNO = errno.EPERM
# (group, syscalls, why). Each fails with EPERM; names unknown to this kernel/arch are skipped.
DENIED_SYSCALLS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("keyring", ("add_key", "keyctl", "request_key"), "the kernel keyring is not namespaced"),
    ("tracing", ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "perf_event_open", "pidfd_getfd"),
     "no reading or steering other processes"),
    ("namespaces", ("unshare", "setns"), "no new or foreign namespaces"),
    ("mounts", ("mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig",
                "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at"),
     "the mount table is fixed at start"),
    ("kernel attack surface", ("bpf", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
                               "fanotify_init", "lookup_dcookie", "uselib", "ustat", "sysfs", "_sysctl",
                               "vm86", "vm86old", "modify_ldt", "iopl", "ioperm"),
     "rarely needed, often exploited"),
    ("kernel modules and boot", ("init_module", "finit_module", "delete_module", "create_module",
                                 "get_kernel_syms", "query_module", "kexec_load", "kexec_file_load", "reboot"),
     "host kernel state"),
    ("host administration", ("swapon", "swapoff", "syslog", "acct", "quotactl", "quotactl_fd", "nfsservctl",
                             "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex", "vhangup"),
     "host-wide settings"),
    ("memory policy", ("mbind", "set_mempolicy", "move_pages", "get_mempolicy", "migrate_pages"),
     "NUMA placement of other processes"),
)
# clone with any of these flags (a namespace) fails with EPERM; clone3 reports ENOSYS so libc
# falls back to clone, whose flags the filter can see (Docker does the same).
CLONE_NAMESPACE_FLAGS: dict[str, int] = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# personality() may not set these (ASLR off, executable data, page zero, legacy layouts);
# querying (0xffffffff) and the plain Linux personalities stay allowed.
PERSONALITY_DENIED_FLAGS: dict[str, int] = {
    "ADDR_NO_RANDOMIZE": 0x0040000, "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000, "ADDR_LIMIT_32BIT": 0x0800000, "ADDR_LIMIT_3GB": 0x8000000,
}

# --- limits (what enforces each; values come from SandboxLimits) -------------------------------

LIMITS: tuple[tuple[str, str, str], ...] = (
    ("wall_timeout_s", "wall clock per run", "host timer: interrupt, then SIGKILL of the pid namespace"),
    ("cpu_time_s", "CPU seconds per run", "RLIMIT_CPU, re-armed per run"),
    ("memory_bytes", "memory", "RLIMIT_AS per process + cgroup memory limit when available"),
    ("max_processes", "processes/threads", "cgroup pids.max when available, else RLIMIT_NPROC of the jail uid"),
    ("max_file_bytes", "one file", "RLIMIT_FSIZE"),
    ("scratch_bytes", "scratch dir", "tmpfs size= (kernel)"),
    ("max_output_bytes", "output per run and stream", "host-side cap with a truncation marker"),
)


@dataclass(frozen=True)
class HostIdentity:
    """Who the jail is on the host: None means 'whoever runs toolrail' (not root)."""

    uid: int
    gid: int


def host_identity(override: str | None = None) -> HostIdentity | None:
    """The unprivileged uid/gid to drop to when we are root; None when we are not root.

    `override` (or $TOOLRAIL_SANDBOX_HOST_UID) is 'UID' or 'UID:GID'. uid 0 is refused."""
    if os.geteuid() != 0:
        return None
    text = (override or os.environ.get(HOST_UID_ENV) or str(DEFAULT_HOST_UID)).strip()
    uid_text, _, gid_text = text.partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        raise ValueError(f"{HOST_UID_ENV}: expected UID or UID:GID (numbers), got {text!r}")
    uid = int(uid_text)
    gid = int(gid_text) if gid_text else uid
    if uid == 0 or gid == 0:
        raise ValueError(f"{HOST_UID_ENV}: the sandbox must not run as host root (uid/gid 0)")
    return HostIdentity(uid, gid)


def mask_arguments() -> list[str]:
    """bwrap arguments (after `--proc /proc`) for the read-only and masked kernel interfaces.

    Paths this kernel does not have are left out (it is the same kernel inside and out)."""
    argv: list[str] = []
    for path in READ_ONLY_PROC:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    for path in MASKED_FILES:
        if os.path.exists(path):
            argv += ["--ro-bind", "/dev/null", path]
    for path in MASKED_DIRS:
        if os.path.isdir(path):
            argv += ["--tmpfs", path, "--remount-ro", path]
    return argv


@functools.cache
def seccomp_program() -> bytes:
    """The compiled filter (classic BPF) built by libseccomp from the tables above, cached."""
    import pyseccomp as seccomp

    deny = seccomp.ERRNO(DENIED_ERRNO)
    program = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for _, names, _ in DENIED_SYSCALLS:
        for name in names:
            _add_rule(program, deny, name)
    for flag in CLONE_NAMESPACE_FLAGS.values():
        _add_rule(program, deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    _add_rule(program, seccomp.ERRNO(errno.ENOSYS), "clone3")
    for flag in PERSONALITY_DENIED_FLAGS.values():
        # "flag set and some other bit clear": every value with the flag except the query 0xffffffff.
        for bit in range(32):
            other = 1 << bit
            if other != flag:
                _add_rule(program, deny, "personality", seccomp.Arg(0, seccomp.MASKED_EQ, flag | other, flag))
    with os.fdopen(os.memfd_create("toolrail-seccomp", os.MFD_CLOEXEC), "w+b") as memory:
        program.export_bpf(memory)
        memory.flush()
        memory.seek(0)
        return memory.read()


def _add_rule(program, action, name: str, *args) -> None:
    try:
        program.add_rule(action, name, *args)
    except (RuntimeError, ValueError, OSError):
        pass  # not a syscall of this arch (vm86 on x86-64 ...): nothing to deny


def denied_syscalls_here() -> list[str]:
    """The denied syscall names this machine knows (for the printed table and tests)."""
    import pyseccomp as seccomp

    names = []
    for _, group, _ in DENIED_SYSCALLS:
        for name in group:
            try:
                seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
            except (RuntimeError, ValueError, OSError):
                continue
            names.append(name)
    return names


def policy_rows(limits=None) -> list[tuple[str, str, str, str]]:
    """(area, what, rule, enforced by) rows: the whole policy, for `toolrail sandbox policy`."""
    from toolrail.sandbox.base import SandboxLimits

    limits = limits or SandboxLimits()
    rows: list[tuple[str, str, str, str]] = [
        ("identity", "host uid/gid when toolrail is root",
         f"{DEFAULT_HOST_UID} (or ${HOST_UID_ENV}, --sandbox-uid); never 0", "setresuid/setresgid before bwrap"),
        ("identity", "host uid/gid otherwise", "the caller's own (unprivileged)", "bwrap user namespace"),
        ("identity", "uid/gid inside", f"{SANDBOX_UID}, no capabilities, no_new_privs", "bwrap --uid/--gid, --cap-drop ALL"),
        ("identity", "session keyring", "a new empty one; keyring syscalls denied", "keyctl(JOIN_SESSION_KEYRING) + seccomp"),
        ("namespaces", "user, pid, net, ipc, uts, mount, cgroup", "all new; nested user namespaces off",
         "bwrap --unshare-all --disable-userns"),
        ("network", "interfaces", "loopback of its own only", "bwrap --unshare-net"),
    ]
    rows += [("mount", path, what, "bwrap") for path, what in MOUNTS]
    rows += [("read-only", path, "read-only", "bwrap --ro-bind") for path in READ_ONLY_PROC]
    rows += [("masked", path, "unreadable (bound to /dev/null)", "bwrap --ro-bind /dev/null") for path in MASKED_FILES]
    rows += [("masked", path, "empty, read-only", "bwrap --tmpfs + --remount-ro") for path in MASKED_DIRS]
    rows.append(("masked", "/sys/firmware", "absent with /sys", "not mounted"))
    rows += [("seccomp", group, f"{', '.join(names)} → EPERM ({why})", "libseccomp filter via bwrap --seccomp")
             for group, names, why in DENIED_SYSCALLS]
    rows.append(("seccomp", "clone", "with " + ", ".join(CLONE_NAMESPACE_FLAGS) + " → EPERM; clone3 → ENOSYS",
                 "libseccomp argument filter"))
    rows.append(("seccomp", "personality", "setting " + ", ".join(PERSONALITY_DENIED_FLAGS) + " → EPERM",
                 "libseccomp argument filter"))
    rows.append(("seccomp", "other architectures (32-bit, x32 calls)", "process killed", "libseccomp bad-arch action"))
    for field, what, enforcer in LIMITS:
        rows.append(("limit", what, f"{field} = {getattr(limits, field)}", enforcer))
    rows.append(("limit", "produced files saved per call",
                 "bytes ≤ scratch_bytes, count ≤ 1000 (--out-max-bytes, --out-max-files); regular files only",
                 "host-side budget when copying to --out"))
    return rows
