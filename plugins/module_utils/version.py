# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bk's version, written in one place: galaxy.yml's ``version`` (MANIFEST.json's in a built
collection, which ansible-galaxy writes from it). Everything else reads it from there:

- the collection's own code (the callback plugin, this package in a checkout): the collection root
  two directories up;
- a host's copy (the runner role packs the collection's galaxy.yml or MANIFEST.json beside it);
- the reporter's wheel, whose version setuptools took from here at build time: its metadata;
- a module, which runs from Ansible's payload with no file beside it: the copy the runner role
  installed on the host.
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

try:
    from importlib.metadata import PackageNotFoundError, version
except ImportError:  # Python before 3.8 (a host's old interpreter): no metadata to read
    version = None

METADATA = ("galaxy.yml", "MANIFEST.json")
HOST_COPY = "/usr/local/lib/bk/bk_evidence"  # where the runner role installs this package
DISTRIBUTION = "bk-reporter"
GALAXY_VERSION = re.compile(r"""^version:[ \t]*["']?([^"'\s#]+)""", re.MULTILINE)


def from_metadata(directory: str) -> Optional[str]:
    """The version galaxy.yml or MANIFEST.json in `directory` gives, if either is there."""
    for name in METADATA:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if name == "galaxy.yml":
            found = GALAXY_VERSION.search(text)
            return found.group(1) if found else None
        return str(json.loads(text)["collection_info"]["version"])
    return None


def _from_distribution() -> Optional[str]:
    if version is None:
        return None
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None


def read() -> str:
    here = os.path.dirname(os.path.realpath(__file__))
    collection_root = os.path.dirname(os.path.dirname(here))
    return (
        from_metadata(here)
        or from_metadata(collection_root)
        or _from_distribution()
        or from_metadata(HOST_COPY)
        or "unknown"
    )


BK_VERSION = read()
