"""Multi-process helpers (PySlowFast style): ``launch_job`` spawns NUM_GPUS processes per machine with
``torch.multiprocessing`` (NCCL with CUDA, gloo on the CPU), plus rank queries and gathers that also work in a
single process without ``torch.distributed``."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable, List

import torch
import torch.distributed as dist
from fvcore.common.config import CfgNode

logger = logging.getLogger(__name__)


def is_dist() -> bool:
    """Whether a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_dist() else 1


def is_master() -> bool:
    """Whether this is global rank 0."""
    return get_rank() == 0


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not is_dist():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Synchronise all processes (no-op in a single process)."""
    if is_dist():
        dist.barrier()


def device_for(cfg: CfgNode) -> torch.device:
    """The device of this process: its GPU when CUDA is available and NUM_GPUS > 0, else the CPU."""
    if cfg.NUM_GPUS > 0 and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def free_init_method() -> str:
    """``tcp://localhost:<free port>``."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return f"tcp://localhost:{s.getsockname()[1]}"


def _run(
    local_rank: int,
    num_proc: int,
    func: Callable[..., Any],
    init_method: str,
    shard_id: int,
    num_shards: int,
    backend: str,
    cfg: CfgNode,
) -> None:
    world_size = num_proc * num_shards
    rank = shard_id * num_proc + local_rank
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_proc))
    dist.init_process_group(
        backend=backend, init_method=init_method, world_size=world_size, rank=rank
    )
    try:
        func(cfg=cfg)
    finally:
        dist.destroy_process_group()


def launch_job(
    cfg: CfgNode, init_method: str, func: Callable[..., Any], daemon: bool = False
) -> Any:
    """Run ``func(cfg=cfg)`` in NUM_GPUS processes per machine (one process: called directly, result returned).

    Backend: ``cfg.DIST_BACKEND`` or, if empty, nccl with CUDA and gloo without. ``init_method`` '' picks a free
    local port (single machine only).
    """
    num_proc = max(1, int(cfg.NUM_GPUS))
    if num_proc * cfg.NUM_SHARDS <= 1:
        return func(cfg=cfg)
    backend = cfg.DIST_BACKEND or (
        "nccl" if torch.cuda.is_available() and cfg.NUM_GPUS > 0 else "gloo"
    )
    if not init_method:
        if cfg.NUM_SHARDS > 1:
            raise ValueError("--init_method is required with NUM_SHARDS > 1 (e.g. tcp://host:port)")
        init_method = free_init_method()
    logger.info("launching %d processes per machine (%s, %s)", num_proc, backend, init_method)
    torch.multiprocessing.spawn(
        _run,
        nprocs=num_proc,
        args=(num_proc, func, init_method, cfg.SHARD_ID, cfg.NUM_SHARDS, backend, cfg),
        daemon=daemon,
    )
    return None
