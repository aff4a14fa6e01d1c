"""Processes working together: ranks, shards, sums and a launcher for evaluation.

Training runs on Lightning's DDP (``trainer.devices``/``num_nodes``/``strategy``, launched by
Lightning itself, torchrun or SLURM). Lightning's own launcher re-runs the command line in
every extra process, so code that runs before the ``Trainer`` exists reads the rank from the
environment: :func:`is_rank_zero`. Evaluation shards the split into contiguous, batch-aligned,
non-overlapping ranges (:func:`shard`): every sample is scored exactly once, unlike
``DistributedSampler``, which pads the last batch with repeated samples; the per-process
confusion matrices are summed (:func:`all_reduce_sum`). :func:`run_processes` starts N
processes for ``seglab eval --devices N``.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm

from seglab.artifacts.device import accelerator_device
from seglab.errors import ConfigError, SeglabError
from seglab.models.freeze import convert_sync_batchnorm


def is_rank_zero() -> bool:
    """Whether this process is (or will be) global rank 0; True outside distributed runs.

    Reads an initialised process group if there is one, else the launchers' environment:
    ``RANK`` (torchrun), ``SLURM_PROCID`` (srun with several tasks), and ``NODE_RANK`` /
    ``LOCAL_RANK`` (Lightning's launcher sets them in the processes it starts).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    for name in ("RANK", "SLURM_PROCID"):
        if name in os.environ and (name != "SLURM_PROCID" or _int_env("SLURM_NTASKS", 1) > 1):
            return _int_env(name, 0) == 0
    return _int_env("NODE_RANK", 0) == 0 and _int_env("GROUP_RANK", 0) == 0 and (
        _int_env("LOCAL_RANK", 0) == 0
    )


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process of the group (nothing to do without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    """Destroy this process's default process group, if it has one, while the interpreter is
    whole. Lightning destroys a Gloo group nowhere (only NCCL's, at exit); left to interpreter
    shutdown, Gloo's worker threads can still hold tensors whose release aborts the process
    ("terminate called without an active exception", SIGABRT), and torchrun then reports the
    node as failed after training and scoring had finished."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# How Gloo and NCCL report that another process of the group is gone (its machine died, it
# was killed): the socket to it closed, or the communicator was aborted.
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "NCCL communicator was aborted", "remote process exited")  # fmt: skip


def peer_lost(exc: BaseException, world_size: int, run_dir: Path) -> SeglabError | None:
    """A plain error for ``exc`` when it says another process of a ``world_size``-process
    run stopped (its machine died): what happened and how to go on; None for anything else."""
    text = str(exc)
    if world_size < 2 or not (isinstance(exc, dist.DistNetworkError)
                              or any(marker in text for marker in _PEER_LOST)):  # fmt: skip
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    rank = _int_env("RANK", 0)
    return SeglabError(
        f"another process of this {world_size}-process run stopped (its machine or process "
        f"died), so rank {rank} stops too: {first}. Continue the run from "
        f"{run_dir / 'checkpoints' / 'last.ckpt'} with --resume, on any process count"
    )


def shard(num_items: int, rank: int, world_size: int, block: int = 1) -> range:
    """This rank's contiguous share of ``range(num_items)``; shares never overlap.

    Shares are cut at multiples of ``block`` (the evaluation batch size), so every process
    sees the same batches a single process would, and rank 0 holds the first items.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in a world of {world_size} process(es)")
    block = max(1, int(block))
    blocks = -(-num_items // block)
    start_block = blocks * rank // world_size
    end_block = blocks * (rank + 1) // world_size
    return range(min(num_items, start_block * block), min(num_items, end_block * block))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all processes (itself without a group).

    NCCL reduces CUDA tensors only, so the sum is taken on this process's GPU there.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else (
        torch.device("cpu")
    )
    total = tensor.detach().to(on).clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(tensor.device)


def free_port() -> int:
    """A TCP port free on this machine now (for the processes' rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_processes(
    fn: Callable[..., Any], nprocs: int, accelerator: str, kwargs: dict[str, Any]
) -> Any:
    """Run ``fn(device=..., **kwargs)`` in ``nprocs`` processes joined in one group.

    Gloo on CPU, NCCL on GPUs (process ``r`` uses ``cuda:r``). Returns rank 0's result; a
    seglab error raised in any process is raised here with its message.

    Raises:
        ConfigError: fewer GPUs than processes, or a bad process count.
    """
    if nprocs < 1:
        raise ConfigError(f"--devices must be at least 1, got {nprocs}")
    device = accelerator_device(accelerator)
    if device == "cuda":
        available = torch.cuda.device_count()
        if available < nprocs:
            raise ConfigError(f"--devices {nprocs} on gpu needs {nprocs} GPUs; found {available}")
    threads = max(1, torch.get_num_threads() // nprocs)  # the cores shared, not oversubscribed
    port = free_port()
    # Results travel through files, not a pipe: a large document would block its writer on a
    # full pipe while this process waits in join.
    with tempfile.TemporaryDirectory(prefix="seglab-procs-") as tmp:
        folder = Path(tmp)
        mp.start_processes(
            _worker,
            args=(nprocs, port, device, threads, fn, kwargs, str(folder)),
            nprocs=nprocs,
            join=True,
            start_method="spawn",
        )
        errors = sorted(folder.glob("error-*.txt"))
        if errors:
            raise SeglabError(errors[0].read_text())
        result = folder / "result.pkl"
        if not result.is_file():
            raise SeglabError("the evaluation processes ended without a result")
        with open(result, "rb") as handle:
            return pickle.load(handle)


def _worker(
    rank: int,
    world_size: int,
    port: int,
    device: str,
    threads: int,
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    folder: str,
) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
         "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)}
    )
    torch.set_num_threads(threads)
    backend = "gloo"
    if device == "cuda":
        torch.cuda.set_device(rank)
        device, backend = f"cuda:{rank}", "nccl"
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        result = fn(device=device, **kwargs)
        if rank == 0:
            with open(Path(folder) / "result.pkl", "wb") as handle:
                pickle.dump(result, handle)
    except SeglabError as exc:
        (Path(folder) / f"error-{rank}.txt").write_text(str(exc))
    finally:
        dist.destroy_process_group()


class FrozenAwareSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning's SyncBatchNorm plugin, keeping frozen BatchNorm layers frozen.

    Lightning converts BatchNorm to ``SyncBatchNorm`` when the strategy sets up, after the
    freeze policy ran; the plain conversion would drop the freeze's eval-mode lock, so the
    next ``model.train()`` would update the frozen layers' running statistics again.
    """

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return convert_sync_batchnorm(model)


def sync_batchnorm_plugin() -> FrozenAwareSyncBatchNorm:
    """The SyncBatchNorm plugin a run with ``trainer.sync_batchnorm`` hands to Lightning."""
    return FrozenAwareSyncBatchNorm()
