"""scripts/debian-base.sh on a machine whose apt lists are empty: it updates them and retries the install of
debootstrap, as scripts/engine.sh does for the engine. Run as a real process with apt-get, docker and
debootstrap stand-ins on PATH that record what they are asked (the real ones would change the machine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$STUBS/calls"
case "$1" in
  update) touch "$STUBS/lists" ;;
  install)
    [ -e "$STUBS/lists" ] || { echo "E: Unable to locate package debootstrap" >&2; exit 100; }
    printf '#!/bin/sh\\necho "debootstrap $*" >> "$STUBS/calls"\\nexit 1\\n' > "$STUBS/debootstrap"
    chmod +x "$STUBS/debootstrap" ;;
esac
"""


def test_debootstrap_is_installed_after_an_apt_update_when_the_lists_are_empty(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("scripts/debian-base.sh installs debootstrap only as root: run the test as root")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, text in (("apt-get", APT_GET), ("docker", "#!/bin/sh\nexit 1\n")):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",  # no /usr/sbin: the machine's own debootstrap is not found
        "STUBS": str(stubs),
        "EDGE_CACHE": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "debian-base.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    calls = (stubs / "calls").read_text().splitlines()
    assert calls[0].startswith("apt-get install"), calls
    assert calls[1] == "apt-get update -q", calls
    assert calls[2].startswith("apt-get install"), calls
    # debootstrap, now installed, ran (the stand-in fails, so the script stops there with its log).
    assert any(call.startswith("debootstrap --variant=minbase") for call in calls), (calls, result.stderr)
    assert result.returncode == 1
