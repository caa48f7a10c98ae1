# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keep an htpasswd file equal to a set of users with bcrypt hashes.

Reads ``{"user": "password", ...}`` on stdin (never from the command line).
A user whose current hash still verifies, at the wanted cost, keeps it: no rehash, no change.
Prints ``{"changed": bool, "added": [...], "updated": [...], "removed": [...]}``.
With ``--check`` nothing is written.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import sys
import tempfile

import bcrypt

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def read_htpasswd(path: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                user, sep, digest = line.rstrip("\n").partition(":")
                if sep and user:
                    entries[user] = digest
    except FileNotFoundError:
        pass
    return entries


def verifies(password: str, digest: str, rounds: int) -> bool:
    """The digest is a bcrypt hash of the password, of the wanted cost."""
    if not digest.startswith(BCRYPT_PREFIXES) or digest[4:7] != f"{rounds:02d}$":
        return False
    try:
        return bcrypt.checkpw(password.encode(), ("$2b$" + digest[4:]).encode())
    except ValueError:
        return False


def write_atomically(path: str, content: str, mode: int, gid: int) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".htpasswd.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chown(tmp, 0, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--group", default="root", help="group owning the file")
    parser.add_argument("--mode", default="0640", help="file mode (octal)")
    parser.add_argument("--rounds", type=int, default=6, help="bcrypt cost of the hashes")
    parser.add_argument("--check", action="store_true", help="report what would change, write nothing")
    args = parser.parse_args()

    wanted = json.load(sys.stdin)
    if not isinstance(wanted, dict) or not all(isinstance(v, str) and v for v in wanted.values()):
        sys.stderr.write("bk-htpasswd: stdin must be a JSON object of non-empty password strings\n")
        return 2
    bad = [user for user in wanted if not user or ":" in user or "\n" in user]
    if bad:
        sys.stderr.write(f"bk-htpasswd: invalid user names: {', '.join(bad)}\n")
        return 2

    current = read_htpasswd(args.file)
    added, updated, lines = [], [], []
    for user in sorted(wanted):
        digest = current.get(user)
        if digest is None or not verifies(wanted[user], digest, args.rounds):
            (updated if digest is not None else added).append(user)
            digest = bcrypt.hashpw(wanted[user].encode(), bcrypt.gensalt(rounds=args.rounds)).decode()
        lines.append(f"{user}:{digest}\n")
    removed = sorted(set(current) - set(wanted))

    mode = int(args.mode, 8)
    gid = grp.getgrnam(args.group).gr_gid
    try:
        stat = os.stat(args.file)
        attributes_differ = (stat.st_mode & 0o7777) != mode or stat.st_uid != 0 or stat.st_gid != gid
    except FileNotFoundError:
        attributes_differ = True
    previous = "".join(f"{user}:{digest}\n" for user, digest in current.items())
    content_differs = bool(added or updated or removed) or "".join(lines) != previous
    changed = content_differs or attributes_differ
    if changed and not args.check:
        write_atomically(args.file, "".join(lines), mode, gid)
    json.dump({"changed": changed, "added": added, "updated": updated, "removed": removed}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
