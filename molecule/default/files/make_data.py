"""Creates the test data of a file client under DIR (argv[1]) once; prints what it did.

Text with spaces and non-ASCII names, nested directories, random binary files, a private
file (0600), an empty file, a symlink, and a cache directory tagged with CACHEDIR.TAG
(which the job's exclude_caches leaves out of the backup).
"""

import os
import socket
import sys

root = sys.argv[1]
marker = os.path.join(root, ".bk-molecule-data")
if os.path.exists(marker):
    print("unchanged")
    sys.exit(0)
os.makedirs(os.path.join(root, "docs", "deep", "er", "still"), exist_ok=True)
os.makedirs(os.path.join(root, "cache"), exist_ok=True)
host = socket.gethostname()
numbers = "\n".join(str(i) for i in range(1, 200))
for name in ("readme.txt", "notes with spaces.txt", "unicode-äöü-✓.txt", "deep/er/still/nested.txt"):
    with open(os.path.join(root, "docs", name), "w", encoding="utf-8") as handle:
        handle.write(f"{host} {name}\n{numbers}\n")
for name, size in (("blob-small.bin", 64 << 10), ("blob-large.bin", 3 << 20), ("docs/deep/random.bin", 320 << 10)):
    with open(os.path.join(root, name), "wb") as handle:
        handle.write(os.urandom(size))
with open(os.path.join(root, "private.key"), "w", encoding="utf-8") as handle:
    handle.write("not a real key, but private\n")
os.chmod(os.path.join(root, "private.key"), 0o600)
open(os.path.join(root, "empty"), "w", encoding="utf-8").close()
os.symlink("docs/readme.txt", os.path.join(root, "readme-link"))
with open(os.path.join(root, "cache", "CACHEDIR.TAG"), "w", encoding="utf-8") as handle:
    handle.write("Signature: 8a477f597d28d172789f06886806bc55\n")
with open(os.path.join(root, "cache", "cached.bin"), "wb") as handle:
    handle.write(os.urandom(4096))
with open(marker, "w", encoding="utf-8") as handle:
    handle.write("created by molecule/default/files/make_data.py\n")
print("created")
