"""Ray for every kvid command: start or join, keep it quiet, say what the cluster has.

Nothing from Ray reaches the terminal unless kvid runs with -v: kvid prints its own
progress and summary, and Ray's notices (actor restarts, object store hints, colour resets)
say nothing a kvid user can act on.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from typing import Any

from curate.ffmpeg import terminal_input_detached
from curate.stage import Cluster
from pipelines.config import ConfigError, CurateConfig

# Python loggers of Ray that print start-up and progress notices.
_NOISY_LOGGERS = (
    "ray",
    "ray._private.authentication.authentication_token_setup",
    "ray.data._internal.progress",
    "ray.data",
)
# Runs first in every Ray worker process, on every node (see worker_setup).
_WORKER_SETUP_HOOK = "pipelines.ray_runtime.worker_setup"
_VERBOSE_ENV = "KVID_VERBOSE"


def worker_setup() -> None:
    """Every Ray worker: never read the terminal (a child touching it would be stopped by
    the kernel), and log stage counts when the driver runs with -v."""
    from curate.ffmpeg import detach_terminal_input

    detach_terminal_input()
    if os.environ.get(_VERBOSE_ENV) == "1":
        logging.getLogger("kvid").setLevel(logging.DEBUG)


def verbose() -> bool:
    return logging.getLogger("kvid").isEnabledFor(logging.DEBUG)


def _quiet_loggers() -> None:
    level = logging.INFO if verbose() else logging.ERROR
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def init_ray(cfg: CurateConfig):
    """Start a local Ray (or join ``cfg.ray_address``) once per process; returns the module."""
    _quiet_loggers()
    import ray

    if ray.is_initialized():
        quiet_ray_data()
        return ray
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.INFO if verbose() else logging.ERROR,
        "log_to_driver": verbose(),
        "runtime_env": {"worker_process_setup_hook": _WORKER_SETUP_HOOK,
                        "env_vars": {_VERBOSE_ENV: "1" if verbose() else "0"}},
    }
    if cfg.ray_address:
        kwargs["address"] = cfg.ray_address
    elif cfg.num_cpus:
        kwargs["num_cpus"] = cfg.num_cpus
    try:
        # Ray's daemons and workers inherit /dev/null as stdin, not the user's terminal.
        with terminal_input_detached():
            ray.init(**kwargs)
    except ConnectionError as e:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {cfg.ray_address}: {str(e).splitlines()[0]}. Check the address "
            "(`ray status` on the head prints it); if the cluster uses token authentication (Ray turns it "
            "on when ~/.ray/auth_token exists), run with RAY_AUTH_MODE=token and the cluster's token in "
            "~/.ray/auth_token or RAY_AUTH_TOKEN."
        ) from e
    _undo_colorama()
    quiet_ray_data()
    return ray


@contextlib.contextmanager
def ray_session(cfg: CurateConfig, log_dir: str):
    """Ray for one command: started (or joined) on entry; a Ray started here is shut down on
    exit. Unless -v, whatever Ray's C++ core writes to this process's stderr (it writes to
    file descriptor 2 directly: actor notices, shutdown chatter) goes to ``log_dir/ray.log``,
    while kvid's own messages, logs and progress bar still reach the terminal."""
    import ray

    started = not ray.is_initialized()
    with _native_stderr_to(None if verbose() else os.path.join(log_dir, "ray.log")):
        init_ray(cfg)
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()


_terminal_stream = None  # this process's own stderr, on a file descriptor of its own (see below)


@contextlib.contextmanager
def _native_stderr_to(path: str | None):
    """File descriptor 2 goes to ``path`` for the block; Python's sys.stderr (our messages,
    logs, the progress bar) keeps writing where it did, through a descriptor of its own. That
    stream is never closed: loggers Ray sets up meanwhile keep it and may write after the
    block (a late error of Ray Data's executor thread)."""
    global _terminal_stream
    if path is None:
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sys.stderr.flush()
    if _terminal_stream is None:
        _terminal_stream = open(os.dup(2), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",  # noqa: SIM115
                                errors="backslashreplace")
    saved = os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    old = sys.stderr
    moved = [h for h in logging.root.handlers if isinstance(h, logging.StreamHandler) and h.stream is old]
    sys.stderr = _terminal_stream
    for h in moved:
        h.setStream(_terminal_stream)
    try:
        yield
    finally:
        _terminal_stream.flush()
        sys.stderr = old
        for h in moved:
            h.setStream(old)
        os.dup2(saved, 2)
        os.close(saved)


def _undo_colorama() -> None:
    """Ray's CLI logger calls colorama.init() on import: that wraps sys.stdout and prints a
    colour reset (ESC[0m) at exit into the user's terminal."""
    colorama = sys.modules.get("colorama")
    if colorama is not None:
        colorama.deinit()
        atexit.unregister(colorama.initialise.reset_all)


def quiet_ray_data() -> None:
    """Ray Data settings every kvid graph runs with."""
    import warnings

    from ray.data import DataContext

    # Ray Data sets its loggers up on import; quiet them after that (we show our own bar).
    _quiet_loggers()
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # One row per block: a planned unit or a clip is a unit of parallel work, and rows are
    # small or carry a whole clip, so per-block overhead is noise next to an ffmpeg call.
    ctx.target_max_block_size = 1
    # A task that yields more blocks than this pauses until they are taken, and it keeps its
    # CPU while paused. An analysis task yields one small row per scene; at Ray's default (2)
    # it paused with most of its rows unsent, while the transcodes that would take them waited
    # for a CPU (held by that task and by the motion actor): the first clip of a 2-CPU run
    # took 63 s instead of 23 s. Rows here are records of a few hundred bytes (the largest,
    # a clip's mp4, travels one per block), so a deep buffer costs little memory.
    ctx._max_num_blocks_in_streaming_gen_buffer = 64
    ctx.op_resource_reservation_enabled = False
    # Ray warns when an operator gets fewer inputs than its task limit (a short input list).
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)


def current_cluster() -> Cluster:
    """What the running Ray cluster has: the stages place themselves on it."""
    import ray

    res = ray.cluster_resources()
    return Cluster(cpus=float(res.get("CPU", 1)), gpus=int(res.get("GPU", 0)))
