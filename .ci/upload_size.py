"""Print what travels to the GPU box (tracked and untracked, not ignored files, plus a carried folder) and fail
over 60 MiB (the device takes 64 MiB per call; the rest is margin).  Usage: python .ci/upload_size.py .carry"""

import subprocess
import sys
from pathlib import Path

LIMIT = 60 * 2**20
repo = Path(__file__).resolve().parents[1]
listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                        capture_output=True, check=True).stdout.decode().split("\0")
tree = sum((repo / f).stat().st_size for f in listed if f and (repo / f).is_file())
carried = sum(p.stat().st_size for d in sys.argv[1:] for p in (repo / d).rglob("*") if p.is_file())
total = tree + carried
print(f"upload: tree {tree / 2**20:.1f} MiB + {' '.join(sys.argv[1:])} {carried / 2**20:.1f} MiB "
      f"= {total / 2**20:.1f} MiB (limit {LIMIT / 2**20:.0f} MiB)")
if total > LIMIT:
    sys.exit(f"error: the upload would be {total / 2**20:.1f} MiB, over {LIMIT / 2**20:.0f} MiB")
