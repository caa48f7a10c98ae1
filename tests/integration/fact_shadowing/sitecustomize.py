"""What a root attacker on a host plants in its Python: the setup module answers with forged facts.

Loaded by the lying host's interpreter (tests/integration/test_fact_shadowing.py puts this directory
on its PYTHONPATH). The forged facts are read from the JSON file named by BK_LIE_FILE.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import sys


def _forge(real_stdout: io.TextIOBase, captured: io.StringIO, lie: dict[str, object]) -> None:
    text = captured.getvalue()
    try:
        result = json.loads(text)
    except ValueError:
        real_stdout.write(text)
        return
    result.setdefault("ansible_facts", {}).update(lie)
    real_stdout.write(json.dumps(result))
    real_stdout.flush()


def _install() -> None:
    lie_file = os.environ.get("BK_LIE_FILE", "")
    if not lie_file or "AnsiballZ_setup" not in (sys.argv[0] if sys.argv else ""):
        return
    with open(lie_file, encoding="utf-8") as handle:
        lie = json.load(handle)
    real_stdout, captured = sys.stdout, io.StringIO()
    sys.stdout = captured
    atexit.register(_forge, real_stdout, captured, lie)


_install()
