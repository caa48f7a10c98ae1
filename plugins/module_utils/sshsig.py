# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenSSH SSHSIG signatures (``ssh-keygen -Y sign`` / ``-Y verify``) for bk manifests.

Signing uses the ``cryptography`` package when it is importable and falls back to
``ssh-keygen -Y sign`` otherwise, so a host needs nothing an SSH server does not have.
Verification needs ``cryptography``; Ed25519 signatures are checked by libsodium (PyNaCl) where
it is importable, which refuses everything OpenSSL refuses and small-order keys besides.
Supported keys: ed25519, ECDSA P-256/384/521, RSA of 2048 bits or more (signed with
rsa-sha2-512; rsa-sha2-256 is accepted when verifying).

Format: https://github.com/openssh/openssh-portable/blob/master/PROTOCOL.sshsig
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import subprocess
import tempfile
from typing import Any, Dict, Optional, Sequence, Tuple

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

    HAS_CRYPTOGRAPHY = True
except ImportError:  # a host without python3-cryptography signs with ssh-keygen
    HAS_CRYPTOGRAPHY = False

try:  # libsodium checks an Ed25519 signature in about 60 % of OpenSSL's time (docs/benchmarks.md)
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError

    HAS_LIBSODIUM = True
except ImportError:
    HAS_LIBSODIUM = False

NAMESPACE = "bk-manifest@v1"
MAGIC = b"SSHSIG"
SIG_VERSION = 1
HASH_ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
SIGN_HASH = "sha512"
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
HOST_KEY_PREFERENCE = ("ssh_host_ed25519_key", "ssh_host_ecdsa_key", "ssh_host_rsa_key")
ECDSA_CURVES = {
    "ecdsa-sha2-nistp256": ("nistp256", "sha256"),
    "ecdsa-sha2-nistp384": ("nistp384", "sha384"),
    "ecdsa-sha2-nistp521": ("nistp521", "sha512"),
}
RSA_SIGNATURE_HASHES = {"rsa-sha2-512": "sha512", "rsa-sha2-256": "sha256"}
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", *ECDSA_CURVES)
# Every key, enrolled or embedded in a signature, is parsed by _key_blob_type: the one place
# that refuses RSA moduli small enough to factor (OpenSSH itself still makes 1024-bit keys).
MIN_RSA_BITS = 2048
MAX_ARMORED_LENGTH = 16384
SSH_KEYGEN_TIMEOUT_SECONDS = 30


class SignatureError(Exception):
    """A signature that is malformed, for another namespace, by a key not allowed, or wrong."""


class _Reader:
    """Reads SSH wire-format fields; any shortfall is a SignatureError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def raw(self, length: int) -> bytes:
        if length < 0 or self._pos + length > len(self._data):
            raise SignatureError("signature is truncated")
        chunk = self._data[self._pos : self._pos + length]
        self._pos += length
        return chunk

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.raw(4))[0])

    def string(self) -> bytes:
        return self.raw(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError:
            raise SignatureError("signature has a non-ASCII name field") from None

    def mpint(self) -> int:
        value = self.string()
        if value and value[0] & 0x80:
            raise SignatureError("signature has a negative integer")
        return int.from_bytes(value, "big")

    def end(self) -> None:
        if self._pos != len(self._data):
            raise SignatureError("signature has trailing data")


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return _string(raw)


def signed_data(message: bytes, namespace: str, hash_algorithm: str = SIGN_HASH) -> bytes:
    """The bytes an SSHSIG signature is computed over."""
    digest = HASH_ALGORITHMS[hash_algorithm](message).digest()
    return MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_algorithm.encode()) + _string(digest)


def armor(blob: bytes) -> str:
    encoded = base64.b64encode(blob).decode("ascii")
    lines = [encoded[i : i + 70] for i in range(0, len(encoded), 70)]
    return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


def dearmor(armored: str) -> bytes:
    if not isinstance(armored, str) or len(armored) > MAX_ARMORED_LENGTH:
        raise SignatureError("signature is not an armored SSH signature")
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != ARMOR_BEGIN or lines[-1] != ARMOR_END:
        raise SignatureError("signature is not an armored SSH signature")
    try:
        return base64.b64decode("".join(lines[1:-1]).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SignatureError("signature is not valid base64") from None


# --- public keys -------------------------------------------------------------------------


def _key_blob_type(blob: bytes) -> str:
    reader = _Reader(blob)
    key_type = reader.text()
    if key_type == "ssh-ed25519":
        if len(reader.string()) != 32:
            raise SignatureError("ed25519 key has the wrong length")
    elif key_type == "ssh-rsa":
        reader.mpint()
        bits = reader.mpint().bit_length()
        if bits < MIN_RSA_BITS:
            raise SignatureError("RSA key has %d bits; at least %d are required" % (bits, MIN_RSA_BITS))
    elif key_type in ECDSA_CURVES:
        if reader.text() != ECDSA_CURVES[key_type][0]:
            raise SignatureError("ECDSA key names the wrong curve")
        reader.string()
    else:
        raise SignatureError("unsupported key type %r" % key_type)
    reader.end()
    return key_type


# Parsed public key lines and loaded public keys, by their text or blob: both are pure
# functions of it, so the caches never need invalidating; they are bounded all the same.
_CACHE_LIMIT = 4096
_KEY_LINES: Dict[str, Tuple[str, bytes]] = {}
_PUBLIC_KEYS: Dict[bytes, Any] = {}


def _remember(cache: Dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _parse_public_key_line(line: str) -> Tuple[str, bytes]:
    if isinstance(line, str):
        known = _KEY_LINES.get(line)
        if known is not None:
            return known
    parsed = _parse_public_key_line_uncached(line)
    _remember(_KEY_LINES, line, parsed)
    return parsed


def _parse_public_key_line_uncached(line: str) -> Tuple[str, bytes]:
    fields = line.split() if isinstance(line, str) else []
    if len(fields) < 2:
        raise ValueError("not an OpenSSH public key line: %r" % (line,))
    try:
        blob = base64.b64decode(fields[1].encode("ascii"), validate=True)
        key_type = _key_blob_type(blob)
    except (binascii.Error, UnicodeEncodeError, ValueError, SignatureError) as exc:
        raise ValueError("not an OpenSSH public key line: %s" % exc) from None
    if key_type != fields[0]:
        raise ValueError("key type %r does not match its data (%s)" % (fields[0], key_type))
    return key_type, blob


def normalize_public_key(line: str) -> str:
    """``type base64`` without the comment; ValueError if the line is not a supported key."""
    key_type, blob = _parse_public_key_line(line)
    return "%s %s" % (key_type, base64.b64encode(blob).decode("ascii"))


def fingerprint(public_key_line: str) -> str:
    """``SHA256:<base64 without padding>``, as ``ssh-keygen -l`` prints it."""
    _key_type, blob = _parse_public_key_line(public_key_line)
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def preferred_host_key(directory: str = "/etc/ssh") -> str:
    """The host's private key to sign with: ed25519 first, then ECDSA, then RSA."""
    for name in HOST_KEY_PREFERENCE:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError("no SSH host key (%s) in %s" % (", ".join(HOST_KEY_PREFERENCE), directory))


# --- signing -----------------------------------------------------------------------------


def sign(message: bytes, private_key_path: str, namespace: str = NAMESPACE) -> str:
    """Armored SSHSIG of ``message`` by the (unencrypted) OpenSSH private key at the path."""
    if HAS_CRYPTOGRAPHY:
        return _sign_with_cryptography(message, private_key_path, namespace)
    return _sign_with_ssh_keygen(message, private_key_path, namespace)


def _sign_with_ssh_keygen(message: bytes, private_key_path: str, namespace: str) -> str:
    command = ["ssh-keygen", "-q", "-Y", "sign", "-f", private_key_path, "-n", namespace]
    with tempfile.TemporaryDirectory(prefix="bk-sshsig-") as scratch:
        path = os.path.join(scratch, "message")
        with open(path, "wb") as handle:
            handle.write(message)
        completed = subprocess.run(
            [*command, path],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=SSH_KEYGEN_TIMEOUT_SECONDS,
            check=False,
        )
        if completed.returncode != 0:
            detail = completed.stderr.decode("utf-8", "replace").strip()
            raise RuntimeError("ssh-keygen -Y sign failed (%d): %s" % (completed.returncode, detail))
        with open(path + ".sig", encoding="ascii") as handle:
            return handle.read()


def _sign_with_cryptography(message: bytes, private_key_path: str, namespace: str) -> str:
    with open(private_key_path, "rb") as handle:
        private_key = serialization.load_ssh_private_key(handle.read(), password=None)
    public_line = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public_blob = base64.b64decode(public_line.split()[1])
    data = signed_data(message, namespace, SIGN_HASH)
    signature = _ssh_signature(private_key, data)
    blob = (
        MAGIC
        + struct.pack(">I", SIG_VERSION)
        + _string(public_blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(SIGN_HASH.encode())
        + _string(signature)
    )
    return armor(blob)


def _ssh_signature(private_key: Any, data: bytes) -> bytes:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return _string(b"ssh-ed25519") + _string(private_key.sign(data))
    if isinstance(private_key, rsa.RSAPrivateKey):
        raw = private_key.sign(data, padding.PKCS1v15(), hashes.SHA512())
        return _string(b"rsa-sha2-512") + _string(raw)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        key_type, hash_name = _ecdsa_type(private_key.curve.name)
        der = private_key.sign(data, ec.ECDSA(_hash(hash_name)))
        r, s = decode_dss_signature(der)
        return _string(key_type.encode()) + _string(_mpint(r) + _mpint(s))
    raise ValueError("unsupported private key type: %s" % type(private_key).__name__)


def _ecdsa_type(curve_name: str) -> Tuple[str, str]:
    by_curve = {
        "secp256r1": "ecdsa-sha2-nistp256",
        "secp384r1": "ecdsa-sha2-nistp384",
        "secp521r1": "ecdsa-sha2-nistp521",
    }
    if curve_name not in by_curve:
        raise ValueError("unsupported ECDSA curve %s" % curve_name)
    key_type = by_curve[curve_name]
    return key_type, ECDSA_CURVES[key_type][1]


def _hash(name: str) -> Any:
    return {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[name]


# --- verification ------------------------------------------------------------------------


class ParsedSignature:
    """The fields of an SSHSIG blob."""

    def __init__(
        self, public_blob: bytes, namespace: str, hash_algorithm: str, signature: bytes, key_type: str = ""
    ) -> None:
        self.public_blob = public_blob
        self.namespace = namespace
        self.hash_algorithm = hash_algorithm
        self.signature = signature
        self.key_type = key_type or _key_blob_type(public_blob)

    def public_key(self) -> str:
        """The embedded public key as ``type base64`` (what signature_public_key returns)."""
        return "%s %s" % (self.key_type, base64.b64encode(self.public_blob).decode("ascii"))

    def fingerprint(self) -> str:
        """The embedded public key's fingerprint (what fingerprint(public_key()) returns)."""
        return _blob_fingerprint(self)


def parse(armored: str) -> ParsedSignature:
    """Parse and structurally check an armored SSHSIG; SignatureError on anything unexpected."""
    reader = _Reader(dearmor(armored))
    if reader.raw(len(MAGIC)) != MAGIC:
        raise SignatureError("not an SSHSIG signature (bad magic)")
    if reader.uint32() != SIG_VERSION:
        raise SignatureError("unsupported SSHSIG version")
    public_blob = reader.string()
    namespace = reader.text()
    if reader.string() != b"":
        raise SignatureError("SSHSIG reserved field is not empty")
    hash_algorithm = reader.text()
    signature = reader.string()
    reader.end()
    if hash_algorithm not in HASH_ALGORITHMS:
        raise SignatureError("unsupported hash algorithm %r" % hash_algorithm)
    return ParsedSignature(public_blob, namespace, hash_algorithm, signature, _key_blob_type(public_blob))


def signature_public_key(armored: str) -> str:
    """The public key (``type base64``) embedded in an armored signature."""
    return parse(armored).public_key()


def verify(message: bytes, armored: str, public_keys: Sequence[str], namespace: str = NAMESPACE) -> str:
    """The entry of ``public_keys`` whose key made the signature; SignatureError otherwise."""
    return verify_parsed(message, parse(armored), public_keys, namespace)


def verify_parsed(
    message: bytes, parsed: ParsedSignature, public_keys: Sequence[str], namespace: str = NAMESPACE
) -> str:
    """verify() of a signature already parse()d."""
    if parsed.namespace != namespace:
        raise SignatureError("signature is for namespace %r, expected %r" % (parsed.namespace, namespace))
    allowed = _allowed_entry(parsed.public_blob, public_keys)
    if allowed is None:
        raise SignatureError("signature was made by a key that is not allowed (%s)" % _blob_fingerprint(parsed))
    if not HAS_CRYPTOGRAPHY:
        raise SignatureError("cannot verify signatures: the cryptography package is not installed")
    data = signed_data(message, namespace, parsed.hash_algorithm)
    _check_signature(parsed.public_blob, parsed.signature, data, parsed.key_type)
    return allowed


def _blob_fingerprint(parsed: ParsedSignature) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(parsed.public_blob).digest()).decode("ascii").rstrip("=")


def _allowed_entry(public_blob: bytes, public_keys: Sequence[str]) -> Optional[str]:
    for entry in public_keys:
        try:
            _key_type, blob = _parse_public_key_line(entry)
        except ValueError:
            continue
        if blob == public_blob:
            return entry
    return None


def _check_signature(public_blob: bytes, signature: bytes, data: bytes, key_type: str = "") -> None:
    key_type = key_type or _key_blob_type(public_blob)
    reader = _Reader(signature)
    signature_type = reader.text()
    raw = reader.string()
    reader.end()
    public_key = _PUBLIC_KEYS.get(public_blob)
    if public_key is None:
        public_key = _load_public_key(public_blob, key_type)
        _remember(_PUBLIC_KEYS, public_blob, public_key)
    try:
        _verify_raw(public_key, key_type, signature_type, raw, data)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


class LibsodiumEd25519Key:
    """An Ed25519 public key whose signatures libsodium checks; verify() as cryptography's does."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    def verify(self, signature: bytes, data: bytes) -> None:
        try:
            crypto_sign_open(signature + data, self._raw)
        except BadSignatureError:
            raise InvalidSignature() from None


def _load_public_key(public_blob: bytes, key_type: str) -> Any:
    if key_type == "ssh-ed25519" and HAS_LIBSODIUM:
        reader = _Reader(public_blob)
        reader.text()
        return LibsodiumEd25519Key(reader.string())
    line = ("%s %s" % (key_type, base64.b64encode(public_blob).decode("ascii"))).encode("ascii")
    try:
        return serialization.load_ssh_public_key(line)
    except (ValueError, TypeError) as exc:
        raise SignatureError("signature embeds an invalid public key: %s" % exc) from None


def _verify_raw(public_key: Any, key_type: str, signature_type: str, raw: bytes, data: bytes) -> None:
    if key_type == "ssh-ed25519":
        _expect(signature_type == "ssh-ed25519" and len(raw) == 64, "malformed ed25519 signature")
        public_key.verify(raw, data)
    elif key_type == "ssh-rsa":
        _expect(signature_type in RSA_SIGNATURE_HASHES, "RSA signature type %r not allowed" % signature_type)
        public_key.verify(raw, data, padding.PKCS1v15(), _hash(RSA_SIGNATURE_HASHES[signature_type]))
    else:
        _expect(signature_type == key_type, "ECDSA signature type does not match the key")
        public_key.verify(_ecdsa_der(raw), data, ec.ECDSA(_hash(ECDSA_CURVES[key_type][1])))


def _ecdsa_der(raw: bytes) -> bytes:
    reader = _Reader(raw)
    r = reader.mpint()
    s = reader.mpint()
    reader.end()
    return encode_dss_signature(r, s)


def _expect(condition: bool, reason: str) -> None:
    if not condition:
        raise SignatureError(reason)
