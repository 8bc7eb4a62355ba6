"""bench_enqueue's writer_rss_mb is the writer's own peak, not its parent's.

`ru_maxrss` survives vfork/exec: the PostgreSQL writer, spawned after the benchmark's parent
had peaked in `_raw`, reported that parent's ~250 MB as its own."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_enqueue.py"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux only")
def test_writer_rss_is_its_own(tmp_path: Path) -> None:
    src = tmp_path / "requests.jsonl"
    src.write_bytes(
        b"".join(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                }
            ).encode()
            + b"\n"
            for i in range(20)
        )
    )
    parent = textwrap.dedent(
        f"""
        import subprocess, sys
        peak = bytearray(400 * 1024 * 1024)
        peak[::4096] = b"\\1" * len(peak[::4096])  # touch every page: a 400 MB parent peak
        del peak
        out = subprocess.run(
            [sys.executable, {str(BENCH)!r}, "--worker", {str(tmp_path / "b.db")!r}, {str(src)!r}],
            check=True, capture_output=True, text=True,
        )
        print(out.stdout.strip().splitlines()[-1])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", parent], check=True, capture_output=True, text=True, cwd=ROOT
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["added"] == 20
    assert report["writer_rss_mb"] < 250, report
