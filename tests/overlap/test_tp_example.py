"""examples/tp_mlp.py under uccl-run: the tensor-parallel MLP (fused path forced, over the net
channel) follows the single-process loss curve; the example itself fails if it parts."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tp_mlp_example_matches_single_process_losses():
    cmd = [sys.executable, "-m", "uccl.launch.run", "--nproc-per-node", "2", "--transport", "net",
           os.path.join(ROOT, "examples", "tp_mlp.py"), "--steps", "8", "--splits", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("step")]
    assert len(lines) == 8, proc.stdout
    first, last = (float(l.split("tensor-parallel loss ")[1].split()[0]) for l in (lines[0], lines[-1]))
    assert last < first, "the loss did not go down"
    assert "paths taken: ['fused']" in proc.stdout
