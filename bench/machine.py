"""What every bench records beside its figures: when, and on which machine (these VMs are
noisy, so the load average too)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone


def machine_info() -> dict:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg": os.getloadavg(),
    }
