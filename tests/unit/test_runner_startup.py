"""bk-run starts restic before it loads the signing and delivery code (they load beside restic)."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ("cryptography", "urllib.request", "ssl")


def test_loading_the_runner_leaves_signing_and_delivery_code_for_later() -> None:
    code = f"import sys, bk_run.cli\nprint(' '.join(name for name in {HEAVY!r} if name in sys.modules))\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert completed.stdout.split() == []


def test_recorder_loads_them_when_asked_to_prepare(tmp_path) -> None:
    code = (
        "import sys\n"
        "from bk_evidence.settings import Settings\n"
        "from bk_evidence.recorder import Recorder\n"
        f"recorder = Recorder(Settings({str(tmp_path)!r}))\n"
        "recorder.prepare_in_background()\n"
        "recorder._preparing.join()\n"
        f"print(' '.join(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    (tmp_path / "bk.json").write_text('{"host": "web1", "host_key": "/nonexistent/key"}')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert completed.stdout.split() == list(HEAVY)
