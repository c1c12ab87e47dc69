"""Dropping root once the capture socket is open (`ptc collect --user NAME`)."""

from __future__ import annotations

import os
import pwd


class PrivilegeError(Exception):
    """--user cannot be honoured (one-line message)."""


def lookup(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no user named {user}") from None


def drop_privileges(user: str) -> None:
    """Become `user` (its uid, its primary gid, no supplementary groups); a no-op if already that user."""
    entry = lookup(user)
    if os.geteuid() == entry.pw_uid:
        return
    if os.geteuid() != 0:
        raise PrivilegeError(f"--user {user}: only root can change to another user")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
