"""Starting training processes: one in-process rank on CPU or one GPU, `torchrun`/`deepspeed`
for several GPUs, DeepSpeed's hostfile for several nodes.

For each training stage the CLI calls `plan`: when the stage needs more processes than the
current one and this one was not started by a launcher (no RANK in the environment), it runs the
same `alpo train` command for that stage alone under the launcher, and each child runs
in-process. Sampling and judging stages always run in the CLI's own process.
`prepare_environment` sets what a lone process needs so DeepSpeed never goes looking for MPI:
rank and rendezvous variables, the CPU accelerator when there is no GPU (gloo), and a cached
folder for the ops DeepSpeed compiles on first use.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from alpo.config import LaunchConfig
from alpo.exceptions import ConfigError
from alpo.models import cache_dir

__all__ = ["gpu_count", "launch_command", "plan", "prepare_environment", "with_stage"]


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launched() -> bool:
    """Whether a launcher (torchrun, deepspeed, mpirun with env) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def plan(config: LaunchConfig, argv: list[str]) -> list[str] | None:
    """The launcher command to re-run `argv` under, or None to run in this process."""
    if launched():
        return None
    gpus = gpu_count()
    wanted = config.num_gpus or gpus
    if config.num_gpus > gpus and not config.hostfile:  # a head node may have no GPU
        raise ConfigError(f"launch.num_gpus = {config.num_gpus}, but {gpus} GPU(s) are visible")
    if config.hostfile or wanted > 1:
        return launch_command(config, wanted, argv)
    return None


def launch_command(config: LaunchConfig, gpus: int, argv: list[str]) -> list[str]:
    """`deepspeed --hostfile` for several nodes, else `torchrun`/`deepspeed` on this node, each
    running `python -m alpo_cli ARGV` once per GPU."""
    port = str(config.master_port or free_port())
    if config.hostfile:
        if not Path(config.hostfile).is_file():
            raise ConfigError(f"{config.hostfile}: hostfile not found")
        return [
            "deepspeed",
            "--hostfile",
            config.hostfile,
            "--master_port",
            port,
            "--module",
            "alpo_cli",
            *argv,
        ]
    if config.launcher == "deepspeed":
        return [
            "deepspeed",
            "--num_gpus",
            str(gpus),
            "--master_port",
            port,
            "--module",
            "alpo_cli",
            *argv,
        ]
    return [
        "torchrun",
        "--nproc_per_node",
        str(gpus),
        "--master_port",
        port,
        "-m",
        "alpo_cli",
        *argv,
    ]


def with_stage(argv: list[str], stage: str) -> list[str]:
    """`argv` of an `alpo train` command made to run `stage` alone (other --stage options
    dropped), for the processes a launcher starts."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--stage":
            skip = True
        elif not arg.startswith("--stage="):
            out.append(arg)
    return [*out, "--stage", stage]


def prepare_environment(master_port: int = 0) -> None:
    """Make this process a complete rank-0-of-1 job unless a launcher already did."""
    if not launched():
        os.environ.update(
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(master_port or free_port()),
        )
    if gpu_count() == 0:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # DeepSpeed compiles its CPU communication op on first use (about half a minute); keep it.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    # ...with ninja, which pip installs beside this interpreter but outside PATH without a venv.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
