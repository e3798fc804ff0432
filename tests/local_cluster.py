"""Test-only builders, in one clearly named place: a real multi-node Ray cluster on this
machine (for fault tests and the scale bench) and a hostile input corpus with known outcomes.

Nothing in kvid's packages imports this module; bench/scale.py puts tests/ on its path for it.
"""

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

from curate import synthetic as S
from curate.ffmpeg import run_ffmpeg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(*needles: str) -> list[int]:
    """PIDs whose command line contains every needle (Ray workers show e.g. 'ray::MapBatches(transcode)')."""
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

    def start(self) -> LocalCluster:
        subprocess.run(
            [self.ray, "get-auth-token", "--generate"], env=self.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60
        )
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

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- a hostile corpus: odd and broken inputs, each with the outcomes kvid may give it ----------


def hostile_corpus(folder: str) -> dict[str, set[str]]:
    """Odd and hostile inputs, each with the outcomes kvid may give it: a set of reject
    reasons, or {"ok"} for files that must yield clips. Names are chosen to break shells
    and argument parsers."""
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    good = S.plain_video(p("good.mp4"), duration_s=3, fps=25)
    expect: dict[str, set[str]] = {"good.mp4": {"ok"}}

    def ff(name: str, args: list[str]) -> None:
        run_ffmpeg([*args, "-y", p(name)], timeout=120)

    S.zero_byte_file(p("zero.mp4"))
    expect["zero.mp4"] = {"empty_file"}
    S.random_bytes_file(p("random.mp4"), size=50_000)
    expect["random.mp4"] = {"not_video"}
    S.text_file(p("text.mp4"))
    expect["text.mp4"] = {"not_video"}
    S.truncated_copy(good, p("truncated_moov.mp4"))  # index at the end: lost
    expect["truncated_moov.mp4"] = {"truncated"}
    faststart = S.plain_video(p("_faststart.mp4"), duration_s=3, fps=25, extra=["-movflags", "+faststart"])
    S.truncated_copy(faststart, p("truncated_mid.mp4"))  # index kept, stream cut mid-way
    os.unlink(faststart)
    expect["truncated_mid.mp4"] = {"truncated", "decode_error"}
    S.corrupt_copy(good, p("corrupt.mp4"))
    expect["corrupt.mp4"] = {"decode_error", "truncated"}
    ff("image.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", "-f", "image2", "-c:v", "png"])
    expect["image.mp4"] = {"not_video"}
    ff("audio.mp4", ["-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac"])
    expect["audio.mp4"] = {"not_video"}
    ff("no_frames.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "0", "-c:v", "libx264"])
    expect["no_frames.mp4"] = {"no_frames"}
    ff("one_frame.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "1", "-c:v", "libx264"])
    expect["one_frame.mp4"] = {"too_short"}
    ff(
        "wide_16000x16.mkv",
        ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "1", "-vf", "scale=16000:16", "-c:v", "ffv1"],
    )
    expect["wide_16000x16.mkv"] = {"bad_dimensions"}
    ff(
        "fps1000.mp4",
        ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=1000", "-t", "0.5", "-c:v", "libx264", "-preset", "ultrafast"],
    )
    expect["fps1000.mp4"] = {"bad_fps"}
    ff("raw_stream.h264", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264", "-f", "h264"])
    expect["raw_stream.h264"] = {"ok"}
    ff("vfr.mkv", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "4",
                   "-vf", "select='not(between(mod(n\\,10)\\,3\\,5))'", "-fps_mode", "vfr", "-c:v", "libx264"])
    expect["vfr.mkv"] = {"ok"}
    ff("_upright.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264"])
    S.rotated_copy(p("_upright.mp4"), p("rotated.mp4"))
    os.unlink(p("_upright.mp4"))
    expect["rotated.mp4"] = {"ok"}
    # Latin-1 bytes in a name, as on old archives and network shares: not valid UTF-8.
    odd = os.path.join(os.fsencode(folder), b"latin1 caf\xe9.mp4")
    with open(good, "rb") as src, open(odd, "wb") as dst:
        dst.write(src.read())
    expect[os.fsdecode(b"latin1 caf\xe9.mp4")] = {"ok"}
    for name in (
        "with space.mp4",
        "quote'\"s.mp4",
        "ünïcødé 視頻.mp4",
        "-leading-dash.mp4",
        "$(touch PWNED).mp4",
        "semi;colon|pipe&.mp4",
    ):
        with open(good, "rb") as src, open(p(name), "wb") as dst:
            dst.write(src.read())
        expect[name] = {"ok"}
    os.symlink(p("gone-away.mp4.target"), p("vanished.mp4"))  # listed, but the file is gone
    expect["vanished.mp4"] = {"missing"}
    return expect
