"""fixtures/inputs: committed input sets match their sha256 and their regeneration."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_sha256sums_match_the_files() -> None:
    lines = (FIXTURES / "inputs" / "SHA256SUMS").read_text().splitlines()
    assert len(lines) >= 10
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((FIXTURES / "inputs" / name).read_bytes()).hexdigest() == digest, name


def test_regeneration_is_byte_identical() -> None:
    result = subprocess.run([sys.executable, str(FIXTURES / "make_inputs.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
