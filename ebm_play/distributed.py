"""Data-parallel training on several processes started by ``torchrun``.

``torchrun --nproc_per_node N -m ebm_play train …`` starts N copies of the command with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set. Each copy (a rank) keeps its own replay buffer and random
streams, draws its own real batches, and averages its gradients with the others through
``DistributedDataParallel``, so every rank holds the same weights after every update.

Everything here is a no-op in a plain single process (no process group), so the trainer and the
CLI run one code path whether or not they were started by torchrun.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import EBMError


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` processes (0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 alone talks to the user and writes files, so N ranks don't print N copies."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError as e:
        raise EBMError(f"${name} must be a whole number, got {os.environ[name]!r}") from e


def launched_world() -> World:
    """The layout torchrun announced in the environment (a world of 1 outside torchrun)."""
    return World(rank=_env_int("RANK", 0), size=max(1, _env_int("WORLD_SIZE", 1)), local_rank=_env_int("LOCAL_RANK", 0))


def current_world() -> World:
    """The live process group's layout; a world of 1 when none is initialised (tests, the app)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())


def active() -> bool:
    """True when gradients and decisions must be shared with other processes."""
    return current_world().size > 1


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """Join the process group torchrun set up (if any) for the length of a block.

    Yields the world and the device this rank must use: ``cuda:LOCAL_RANK`` with NCCL when
    ``device`` is CUDA, the CPU with gloo otherwise. The group is destroyed on the way out, errors
    and Ctrl-C included, so no rank leaves sockets (or a hung peer) behind. Outside torchrun it
    yields a world of 1 and ``device`` unchanged, and does nothing else.
    """
    world = launched_world()
    if world.size <= 1:
        yield world, device
        return
    if not dist.is_available():
        raise EBMError("this PyTorch build has no torch.distributed: run without torchrun")
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise EBMError(f"rank {world.rank} wants GPU {world.local_rank}, but this machine has "
                           f"{torch.cuda.device_count()}: use --nproc_per_node {torch.cuda.device_count()} or --device cpu")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():  # the caller's own group (a script that calls cli.main): use it, leave it be
        yield current_world(), device
        return
    # DDP imports torch.distributed.nn, whose functions take ``group=group.WORLD`` as a default:
    # imported after init, they hold the group forever, destroy_process_group() cannot free it, and
    # a gloo worker thread left waiting for the GIL at interpreter exit aborts the process
    # ("terminate called without an active exception"; torch 2.14). Imported first, they hold None.
    importlib.import_module("torch.distributed.nn")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)
    try:
        yield current_world(), device
    except RuntimeError as e:  # a peer died or was interrupted: one line, not a C++ traceback
        if not _lost_peer(e):
            raise
        raise EBMError(f"rank {world.rank}: lost contact with the other ranks ({e})") from e
    finally:
        dist.destroy_process_group()


def _lost_peer(e: RuntimeError) -> bool:
    """A communication failure (usually another rank that stopped first), not a bug of our own.
    DDP's backward reports gloo's socket errors as plain RuntimeErrors, hence the text test."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(w in text for w in ("gloo", "NCCL", "Connection reset", "Connection closed"))


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if active():
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one rank's random stream (buffer, batches, noise).

    Rank 0 keeps ``seed`` itself, so a one-process run is bit for bit today's single-process run;
    other ranks get an unrelated 63-bit seed, so their buffers and batches differ.
    """
    if rank == 0:
        return seed
    digest = hashlib.sha256(f"ebm_play rank seed {seed} {rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when a group is live (else ``module`` itself).

    DDP averages the gradients over ranks during ``backward()``, and broadcasts rank 0's weights
    when it is built, so every rank starts and stays identical. Only the loss forward goes through
    it: samplers call the plain model for input gradients, which never reach DDP's hooks.
    """
    if not active():
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def flagged_ranks(flag: bool) -> list[int]:
    """Every rank says yes or no; all learn which ranks said yes (a collective: all must call it)."""
    world = current_world()
    if world.size <= 1:
        return [0] if flag else []
    flags = torch.zeros(world.size, device=_collective_device())
    flags[world.rank] = float(flag)
    dist.all_reduce(flags)
    return [int(r) for r in flags.nonzero().flatten().tolist()]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (stop together, roll back together)."""
    return bool(flagged_ranks(flag))


def shared_divergence(reason: str | None) -> str | None:
    """Make a divergence verdict collective. A rank that diverged alone would roll back while the
    others stepped on: their weights would drift apart, and DDP would then average unlike models.
    Returns this rank's own reason, else a note naming the ranks that diverged, else None."""
    if not active():
        return reason
    ranks = flagged_ranks(reason is not None)
    if not ranks or reason is not None:
        return reason
    return f"on rank {', '.join(map(str, ranks))}"


def parameter_digest(model: nn.Module) -> str:
    """A short hash of the exact parameter bits (to check that ranks agree)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def gather_digests(model: nn.Module) -> list[str]:
    """Each rank's :func:`parameter_digest`, in rank order (a collective: all must call it)."""
    mine = parameter_digest(model)
    if not active():
        return [mine]
    out: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return [str(d) for d in out]
