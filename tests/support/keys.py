"""OpenSSH keys made by ssh-keygen, and ed25519 keys in memory for tests that sign by the thousand."""

from __future__ import annotations

import base64
import struct
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bk_evidence import sshsig

NAMESPACE = sshsig.NAMESPACE
KEY_SPECS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa": ["-t", "ecdsa", "-b", "256"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
    "rsa": ["-t", "rsa", "-b", "3072"],
}


def make_key(directory: Path, name: str, kind: str = "ed25519") -> Path:
    """A fresh unencrypted OpenSSH private key ``directory/name`` made by ssh-keygen; its .pub beside it."""
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", *KEY_SPECS[kind], "-N", "", "-C", f"root@{name}", "-f", str(path)], check=True)
    return path


def public_line(private_key: Path) -> str:
    return Path(str(private_key) + ".pub").read_text().strip()


def ssh_keygen_sign(key: Path, text: str, namespace: str = NAMESPACE) -> str:
    """An armored SSHSIG of the text's UTF-8 bytes, made by stock `ssh-keygen -Y sign`."""
    with tempfile.TemporaryDirectory() as scratch:
        message = Path(scratch) / "manifest.json"
        message.write_bytes(text.encode("utf-8"))
        subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace, str(message)], check=True)
        return Path(str(message) + ".sig").read_text()


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def public_line_of(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode()


def sshsig_ed25519(
    private: Ed25519PrivateKey, message: bytes, namespace: str = NAMESPACE, embedded_public: str | None = None
) -> str:
    """An armored SSHSIG made by `private`; `embedded_public` names another key in it (a forgery)."""
    public_blob = base64.b64decode((embedded_public or public_line_of(private)).split()[1])
    raw = private.sign(sshsig.signed_data(message, namespace, "sha512"))
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(public_blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(b"ssh-ed25519") + _string(raw))
    )
    return sshsig.armor(blob)
