"""Which process listens on a loopback port (Linux /proc), for fixtures that start
servers on free ports.

A port found free can be taken by another test's server before ours binds it; that
server then answers our readiness probe (same credentials, often) while ours fails to
bind, and the test talks to a stranger. A fixture's server is ready when its probe is
answered *and* its process holds the port.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _family(pid: int) -> set[int]:
    """`pid` and its descendants (several workers: the listening sockets are theirs)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family}
        grew = not more <= family
        family |= more
    return family


def holds_port(pid: int, port: int) -> bool:
    """Whether process `pid` or a child of it listens on TCP `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                # Listening (state 0A), not a connection that got it as its own port.
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
    for member in _family(pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{member}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return True
    return False
