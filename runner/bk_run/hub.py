# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hub's data directory: which of its directories are restic repositories (for
``bk-run receipts`` and ``bk-run offsite``)."""

from __future__ import annotations

import os
import re
from typing import List, Optional

SNAPSHOT_FILE = re.compile(r"^[0-9a-f]{64}$")
REPOSITORY_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")


def repository_dirs(data_dir: str, only: Optional[List[str]]) -> List[str]:
    """Names of the restic repositories (directories with ``snapshots/``) under ``data_dir``."""
    try:
        names = sorted(os.listdir(data_dir))
    except FileNotFoundError:
        return []
    if only is not None:
        names = [name for name in names if name in only]
    return [
        name
        for name in names
        if REPOSITORY_DIR.match(name) and os.path.isdir(os.path.join(data_dir, name, "snapshots"))
    ]
