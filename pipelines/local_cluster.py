"""A real multi-node Ray cluster on this machine (`ray start --head` + `ray start --address`),
for tests and benchmarks of the cluster code path. Stopping it ends only its own processes
(`ray stop` would end every Ray on the machine)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(*needles: str) -> list[int]:
    """PIDs whose command line contains every needle (Ray workers show e.g. 'ray::Map(transcode_op)')."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if all(n in cmd for n in needles):
            pids.append(int(p.name))
    return pids


def kill(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class LocalCluster:
    """``with LocalCluster(nodes=2, cpus_per_node=1) as c: ... c.address ...``"""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, temp_dir: str | None = None):
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.ray = str(Path(sys.executable).parent / "ray")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray puts unix sockets under it.
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="kvr", dir="/tmp")
        self.env = {
            **os.environ,
            # Token authentication, explicitly: `ray start` turns it on by itself when a token
            # file exists, and a driver that was not told would then be refused.
            "RAY_AUTH_MODE": "token",
            "RAY_USAGE_STATS_ENABLED": "0",
            # Notice a lost node in seconds, not the default half minute.
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }

    def _node_args(self) -> list[str]:
        # Every port explicit: another Ray on this machine may hold the defaults.
        return [
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.cpus_per_node}",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]

    def _start(self, args: list[str]) -> None:
        out = subprocess.run([self.ray, "start", *args, *self._node_args()], env=self.env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed: {out.stderr[-2000:]}")

    def start(self) -> "LocalCluster":
        subprocess.run([self.ray, "get-auth-token", "--generate"], env=self.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"])
        for i in range(1, self.nodes):
            self._start([f"--address={self.address}", f"--resources={json.dumps({f'node{i + 1}': 1})}"])
        return self

    def node_raylets(self, node: int) -> list[int]:
        """PIDs of node ``node``'s raylet (2 = the first worker node)."""
        return processes("raylet", f"node{node}")

    def stop(self) -> None:
        kill(processes(self.temp_dir) + processes(self.address))
        time.sleep(1.0)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
