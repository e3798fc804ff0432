"""Every bench script starts: it imports what it needs from kvid (a script's folder comes first
on sys.path, so a bench named like a kvid package, bench/curate.py, must not shadow it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

# e2e_v2d.py runs in video2dataset's own venv; machine.py and e2e_corpus.py are imported, not run.
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py")
                 if p.name not in {"e2e_v2d.py", "machine.py", "e2e_corpus.py"})


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_answers_help(script):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                          cwd=ROOT, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
