"""Free TCP ports on 127.0.0.1 for the tests that start their own Ray head."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """`n` distinct ports that were free on 127.0.0.1 a moment ago (all held open together, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def worker_port_range(size: int = 100) -> tuple[int, int]:
    """A block of `size` ports for Ray's workers that can never hold a port `free_ports` handed out.

    `free_ports` gets its ports from the kernel's ephemeral range, so the block is taken below that range (a block
    inside it once met the object manager's port: Ray refused to start). The process id picks the block, so two
    test runs on one machine rarely share it.
    """
    ephemeral_low = 32768
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if ranges.exists():
        ephemeral_low = int(ranges.read_text().split()[0])
    blocks = max(1, (ephemeral_low - 10000) // size)
    low = 10000 + (os.getpid() % blocks) * size
    return low, low + size - 1
