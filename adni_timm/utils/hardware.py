"""Small facts about the machine that training and
evaluation both need: bf16 support, usable memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ['bf16_supported', 'available_memory', 'local_process_count']

_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number near 2**63


def bf16_supported() -> bool:
    """True on GPUs with native bf16 (Ampere and newer); False on CPU and on T4/V100.

    ``torch.cuda.is_bf16_supported()`` also says True where bf16 is only emulated
    (slow), so ask for native support where this torch can.
    """
    if not torch.cuda.is_available():
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the argument
        return torch.cuda.is_bf16_supported()


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _meminfo_available(meminfo: Path) -> int | None:
    """MemAvailable (what can be allocated without
    swapping; MemFree ignores reclaimable page cache).
    """
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom(cgroup: Path) -> int | None:
    """Limit minus usage of this container's memory cgroup (v2, else v1); None without a limit."""
    for limit_file, usage_file in (
        ('memory.max', 'memory.current'),
        ('memory/memory.limit_in_bytes', 'memory/memory.usage_in_bytes'),
    ):
        limit, usage = _read_int(cgroup / limit_file), _read_int(cgroup / usage_file)
        if limit is not None and limit < _UNLIMITED:
            return max(0, limit - (usage or 0))
    return None


def available_memory(
    meminfo: str | os.PathLike = '/proc/meminfo', cgroup: str | os.PathLike = '/sys/fs/cgroup'
) -> tuple[int | None, str]:
    """(bytes this process can still use, where that number came from); (None, 'unknown') off Linux.

    The smaller of the machine's available memory and the container's (cgroup) headroom: a SLURM job
    or a Docker container is killed at its own limit, whatever the machine has free.
    """
    machine, container = _meminfo_available(Path(meminfo)), _cgroup_headroom(Path(cgroup))
    if container is not None and (machine is None or container < machine):
        return container, 'container (cgroup) limit'
    if machine is not None:
        return machine, 'available memory'
    return None, 'unknown'


def local_process_count() -> int:
    """Processes on this machine (each holds its own slice
    cache): torchrun / accelerate set LOCAL_WORLD_SIZE.
    """
    try:
        return max(1, int(os.environ.get('LOCAL_WORLD_SIZE', '1')))
    except ValueError:
        return 1
