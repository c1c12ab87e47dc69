"""Dropping root once the capture socket is open (`ptc collect --user NAME`).

Becoming the user leaves nothing behind: no supplementary groups, no
capability (permitted, effective, inheritable, ambient, and none left in
the bounding set when started as root), and no_new_privs, so not even an
executed set-uid or file-capability program can get any back.
"""

from __future__ import annotations

import ctypes
import os
import pwd

# <linux/prctl.h>, <linux/capability.h>
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(Exception):
    """--user cannot be honoured (one-line message)."""


def lookup(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no user named {user}") from None


def drop_privileges(user: str) -> None:
    """Become `user` (its uid, its primary gid, no supplementary groups) with no capability left;
    if already that user, only the capabilities go."""
    entry = lookup(user)
    if os.geteuid() != entry.pw_uid:
        if os.geteuid() != 0:
            raise PrivilegeError(f"--user {user}: only root can change to another user")
        os.setgroups([])
        os.setgid(entry.pw_gid)
        _drop_bounding_set()  # needs CAP_SETPCAP: while still root
        os.setuid(entry.pw_uid)  # clears the permitted and effective sets (no PR_SET_KEEPCAPS)
    _clear_capabilities()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int = 0) -> None:
    if _libc().prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise PrivilegeError(f"prctl({option}) failed: {os.strerror(ctypes.get_errno())}")


def _drop_bounding_set() -> None:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap)


def _clear_capabilities() -> None:
    """Empty every capability set of this thread (then of its children), and set no_new_privs."""
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two of {effective, permitted, inheritable}: all zero
    if _libc().capset(header, data) != 0:
        raise PrivilegeError(f"cannot clear the capabilities: {os.strerror(ctypes.get_errno())}")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
