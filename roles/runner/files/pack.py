# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack files into a reproducible tar on the controller, named by a hash of their contents.

Usage: pack.py OUTPUT_DIR PREFIX [--require NAME]... [--into SUBDIR] FILE... (or a
directory: its files, not recursive). Files after ``--into SUBDIR`` are stored as
SUBDIR/NAME, the others as NAME, so one tar can hold several packages. A stored NAME
given with ``--require`` that is not among them is an error (exit 2). Prints {"hash": ..., "tar": ...,
"files": [stored names]}. The same inputs give the same bytes (sorted names, mtime 0,
root-owned, mode 0644), so a host holding the hash already holds these files. An
existing tar is reused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile


def main() -> int:
    out_dir, prefix, *arguments = sys.argv[1:]
    required, inputs = _split_required(arguments)
    members = sorted(_members(inputs))
    missing = sorted(set(required) - {stored for stored, _path in members})
    if missing:
        found_in = sorted({os.path.dirname(path) for _stored, path in members})
        print(
            f"pack.py: {', '.join(missing)} not among the files found (in: {', '.join(found_in) or 'nowhere'})",
            file=sys.stderr,
        )
        return 2
    digest = hashlib.sha256()
    for stored, path in members:
        with open(path, "rb") as handle:
            digest.update(stored.encode() + b"\0" + handle.read() + b"\0")
    name = digest.hexdigest()[:16]
    os.makedirs(out_dir, exist_ok=True)
    tar_path = os.path.join(out_dir, f"{prefix}-{name}.tar")
    if not os.path.exists(tar_path):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for stored, path in members:
                with open(path, "rb") as handle:
                    data = handle.read()
                info = tarfile.TarInfo(stored)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                archive.addfile(info, io.BytesIO(data))
        # A name of this process's own: under the free strategy, or with several reporters, two
        # hosts' tasks may pack the same tar at once, and a shared temporary name could be
        # renamed into place while the other is still writing it.
        tmp = f"{tar_path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, tar_path)
    json.dump({"hash": name, "tar": tar_path, "files": [stored for stored, _path in members]}, sys.stdout)
    return 0


def _split_required(arguments: list[str]) -> tuple[list[str], list[str]]:
    """The names given with --require, and the other arguments."""
    required: list[str] = []
    rest: list[str] = []
    items = iter(arguments)
    for item in items:
        if item == "--require":
            required.append(next(items))
        else:
            rest.append(item)
    return required, rest


def _members(inputs: list[str]) -> list[tuple[str, str]]:
    """(stored name, path) of every file to pack."""
    members: list[tuple[str, str]] = []
    into = ""
    items = iter(inputs)
    for item in items:
        if item == "--into":
            into = next(items) + "/"
            continue
        paths = [os.path.join(item, name) for name in os.listdir(item)] if os.path.isdir(item) else [item]
        members += [(into + os.path.basename(path), path) for path in paths if os.path.isfile(path)]
    return members


if __name__ == "__main__":
    sys.exit(main())
