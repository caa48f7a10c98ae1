"""SSHSIG: interoperability with OpenSSH both ways, strict rejection, a fuzzed parser."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding
from hypothesis import given, settings
from hypothesis import strategies as st

from bk_evidence import sshsig
from support.keys import KEY_SPECS, make_key, public_line

MESSAGE = b'{"schema":"bk.manifest/v1","host":"web1"}'
KINDS = sorted(KEY_SPECS)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("keys")
    return {kind: make_key(directory, kind, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_key(tmp_path_factory.mktemp("other"), "ed25519")


def keygen_verify(
    tmp_path: Path, message: bytes, signature: str, public: str, namespace: str = sshsig.NAMESPACE
) -> bool:
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"signer {public}\n")
    sig = tmp_path / "message.sig"
    sig.write_text(signature)
    completed = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "signer", "-n", namespace, "-s", str(sig)],
        input=message,
        capture_output=True,
        check=False,
    )
    return completed.returncode == 0


def keygen_sign(tmp_path: Path, key: Path, message: bytes, *options: str, namespace: str = sshsig.NAMESPACE) -> str:
    path = tmp_path / "to-sign"
    path.write_bytes(message)
    sig = Path(str(path) + ".sig")
    sig.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace, *options, str(path)], check=True)
    return sig.read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_ssh_keygen_accepts_what_bk_signs(keys: dict[str, Path], kind: str, tmp_path: Path) -> None:
    signature = sshsig.sign(MESSAGE, str(keys[kind]))
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert keygen_verify(tmp_path, MESSAGE, signature, public_line(keys[kind]))
    assert not keygen_verify(tmp_path, MESSAGE + b" ", signature, public_line(keys[kind]))
    assert not keygen_verify(tmp_path, MESSAGE, signature, public_line(keys[kind]), namespace="other@v1")


@pytest.mark.parametrize("kind", KINDS)
def test_bk_accepts_what_ssh_keygen_signs(keys: dict[str, Path], kind: str, tmp_path: Path) -> None:
    public = public_line(keys[kind])
    signature = keygen_sign(tmp_path, keys[kind], MESSAGE)
    assert sshsig.verify(MESSAGE, signature, ["ssh-ed25519 AAAAinvalid", public]) == public


def test_bk_accepts_sha256_and_rsa_sha2_256_from_ssh_keygen(keys: dict[str, Path], tmp_path: Path) -> None:
    signature = keygen_sign(tmp_path, keys["rsa"], MESSAGE, "-O", "hashalg=sha256")
    assert sshsig.parse(signature).hash_algorithm == "sha256"
    assert sshsig.verify(MESSAGE, signature, [public_line(keys["rsa"])])


@pytest.mark.parametrize("kind", KINDS)
def test_rejections(keys: dict[str, Path], other_key: Path, kind: str, tmp_path: Path) -> None:
    public = public_line(keys[kind])
    for signature in (sshsig.sign(MESSAGE, str(keys[kind])), keygen_sign(tmp_path, keys[kind], MESSAGE)):
        changed = bytearray(MESSAGE)
        changed[5] ^= 0x01
        with pytest.raises(sshsig.SignatureError, match="does not verify"):
            sshsig.verify(bytes(changed), signature, [public])
        with pytest.raises(sshsig.SignatureError, match="namespace"):
            sshsig.verify(MESSAGE, signature, [public], namespace="git")
        with pytest.raises(sshsig.SignatureError, match="not allowed"):
            sshsig.verify(MESSAGE, signature, [public_line(other_key)])
        blob = sshsig.dearmor(signature)
        with pytest.raises(sshsig.SignatureError, match="truncated"):
            sshsig.verify(MESSAGE, sshsig.armor(blob[:-1]), [public])
        cut = signature.splitlines()
        with pytest.raises(sshsig.SignatureError):
            sshsig.verify(MESSAGE, "\n".join([*cut[:-2], cut[-1]]), [public])


def test_signature_with_another_namespace_is_rejected(keys: dict[str, Path]) -> None:
    signature = sshsig.sign(MESSAGE, str(keys["ed25519"]), namespace="file")
    with pytest.raises(sshsig.SignatureError, match="namespace 'file'"):
        sshsig.verify(MESSAGE, signature, [public_line(keys["ed25519"])])
    assert sshsig.verify(MESSAGE, signature, [public_line(keys["ed25519"])], namespace="file")


def _ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def test_sha1_rsa_signatures_are_refused(keys: dict[str, Path]) -> None:
    private = serialization.load_ssh_private_key(keys["rsa"].read_bytes(), None)
    public_blob = base64.b64decode(public_line(keys["rsa"]).split()[1])
    data = sshsig.signed_data(MESSAGE, sshsig.NAMESPACE)
    raw = private.sign(data, padding.PKCS1v15(), hashes.SHA1())
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _ssh_string(public_blob)
        + _ssh_string(sshsig.NAMESPACE.encode())
        + _ssh_string(b"")
        + _ssh_string(b"sha512")
        + _ssh_string(_ssh_string(b"ssh-rsa") + _ssh_string(raw))
    )
    with pytest.raises(sshsig.SignatureError, match="'ssh-rsa' not allowed"):
        sshsig.verify(MESSAGE, sshsig.armor(blob), [public_line(keys["rsa"])])


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [(0, b"SSHSIH", "magic"), (1, struct.pack(">I", 2), "version"), (4, _ssh_string(b"x"), "reserved")],
)
def test_structural_fields_are_checked(keys: dict[str, Path], field: int, value: bytes, reason: str) -> None:
    blob = sshsig.dearmor(sshsig.sign(MESSAGE, str(keys["ed25519"])))
    public_blob = base64.b64decode(public_line(keys["ed25519"]).split()[1])
    parts = [b"SSHSIG", struct.pack(">I", 1), _ssh_string(public_blob), _ssh_string(sshsig.NAMESPACE.encode())]
    parts += [_ssh_string(b""), blob[sum(map(len, parts)) + 4 :]]
    assert b"".join(parts) == blob
    parts[field] = value
    with pytest.raises(sshsig.SignatureError, match=reason):
        sshsig.verify(MESSAGE, sshsig.armor(b"".join(parts)), [public_line(keys["ed25519"])])


def test_unknown_hash_algorithm_is_refused(keys: dict[str, Path]) -> None:
    armored = sshsig.sign(MESSAGE, str(keys["ed25519"]))
    blob = sshsig.dearmor(armored).replace(_ssh_string(b"sha512"), _ssh_string(b"md5"))
    with pytest.raises(sshsig.SignatureError, match="hash algorithm"):
        sshsig.verify(MESSAGE, sshsig.armor(blob), [public_line(keys["ed25519"])])


def test_fingerprint_and_normalisation_match_ssh_keygen(keys: dict[str, Path]) -> None:
    for key in keys.values():
        pub = Path(str(key) + ".pub")
        listed = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True)
        assert sshsig.fingerprint(pub.read_text()) == listed.stdout.split()[1]
        key_type, data, _comment = pub.read_text().split()
        assert sshsig.normalize_public_key(pub.read_text()) == f"{key_type} {data}"
        assert sshsig.signature_public_key(sshsig.sign(MESSAGE, str(key))) == f"{key_type} {data}"


def test_a_parsed_signature_names_its_key_and_verifies_like_verify(keys: dict[str, Path], other_key: Path) -> None:
    for key in keys.values():
        line = Path(str(key) + ".pub").read_text()
        signature = sshsig.sign(MESSAGE, str(key))
        parsed = sshsig.parse(signature)
        assert parsed.public_key() == sshsig.signature_public_key(signature) == sshsig.normalize_public_key(line)
        assert parsed.fingerprint() == sshsig.fingerprint(line)
        for _round in range(2):  # the second time from the caches of parsed and loaded keys
            assert sshsig.verify_parsed(MESSAGE, parsed, [line]) == sshsig.verify(MESSAGE, signature, [line]) == line
            with pytest.raises(sshsig.SignatureError, match="does not verify"):
                sshsig.verify_parsed(MESSAGE + b" ", parsed, [line])
            with pytest.raises(sshsig.SignatureError, match="not allowed"):
                sshsig.verify_parsed(MESSAGE, parsed, [Path(str(other_key) + ".pub").read_text()])


@pytest.mark.parametrize(
    "line", ["", "ssh-ed25519", "ssh-ed25519 !!!", "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGk=", "ssh-dss AAAAB3NzaC1kc3M="]
)
def test_invalid_public_keys(line: str) -> None:
    with pytest.raises(ValueError):
        sshsig.normalize_public_key(line)


def test_preferred_host_key_prefers_ed25519(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sshsig.preferred_host_key(str(tmp_path))
    make_key(tmp_path, "ssh_host_rsa_key", "rsa")
    assert sshsig.preferred_host_key(str(tmp_path)).endswith("ssh_host_rsa_key")
    make_key(tmp_path, "ssh_host_ecdsa_key", "ecdsa256")
    assert sshsig.preferred_host_key(str(tmp_path)).endswith("ssh_host_ecdsa_key")
    make_key(tmp_path, "ssh_host_ed25519_key")
    assert sshsig.preferred_host_key(str(tmp_path)).endswith("ssh_host_ed25519_key")


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa384", "rsa"])
def test_signer_falls_back_to_ssh_keygen_without_cryptography(keys: dict[str, Path], kind: str, tmp_path: Path) -> None:
    """Run sign() in a Python where importing cryptography fails, as on a bare host."""
    script = (
        "import sys\n"
        "sys.modules['cryptography'] = None\n"  # makes `import cryptography...` raise ImportError
        "from bk_evidence import sshsig\n"
        "assert not sshsig.HAS_CRYPTOGRAPHY\n"
        "sys.stdout.write(sshsig.sign(sys.stdin.buffer.read(), sys.argv[1]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(keys[kind])],
        input=MESSAGE,
        capture_output=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    signature = completed.stdout.decode()
    assert sshsig.verify(MESSAGE, signature, [public_line(keys[kind])])
    assert keygen_verify(tmp_path, MESSAGE, signature, public_line(keys[kind]))


@settings(max_examples=200)
@given(text=st.text(max_size=400))
def test_parser_fuzz_random_text(text: str) -> None:
    with pytest.raises(sshsig.SignatureError):
        sshsig.verify(MESSAGE, text, [])


@pytest.fixture(scope="module")
def reference(keys: dict[str, Path]) -> dict[str, tuple[str, bytes]]:
    return {kind: (public_line(keys[kind]), sshsig.dearmor(sshsig.sign(MESSAGE, str(keys[kind])))) for kind in KINDS}


@settings(max_examples=300)
@given(data=st.binary(max_size=600))
def test_parser_fuzz_random_blobs(reference: dict[str, tuple[str, bytes]], data: bytes) -> None:
    with pytest.raises(sshsig.SignatureError):
        sshsig.verify(MESSAGE, sshsig.armor(data), [public for public, _blob in reference.values()])


@settings(max_examples=400)
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_parser_fuzz_mutated_signatures(
    reference: dict[str, tuple[str, bytes]], kind: str, data: st.DataObject
) -> None:
    """Flipped, cut and inserted bytes anywhere in a real signature: SignatureError, nothing else."""
    public, blob = reference[kind]
    mutated = bytearray(blob)
    position = data.draw(st.integers(0, len(blob) - 1))
    action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if action == "flip":
        mutated[position] ^= data.draw(st.integers(1, 255))
    elif action == "cut":
        del mutated[position:]
    else:
        mutated[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(sshsig.SignatureError):
        sshsig.verify(MESSAGE, sshsig.armor(bytes(mutated)), [public])


@pytest.fixture(scope="module")
def rsa_1024_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RSA key ssh-keygen still makes but that is factorable: below the 2048-bit floor."""
    path = tmp_path_factory.mktemp("weak") / "key_rsa1024"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(path)], check=True)
    return path


def test_rsa_keys_under_2048_bits_are_refused_as_keys(rsa_1024_key: Path) -> None:
    with pytest.raises(ValueError, match="RSA key has 1024 bits; at least 2048 are required"):
        sshsig.normalize_public_key(public_line(rsa_1024_key))


def test_a_signature_by_an_rsa_key_under_2048_bits_does_not_verify(rsa_1024_key: Path, tmp_path: Path) -> None:
    # What an attacker who factored a weak enrolled key sends: a real signature by that key,
    # checked against an allowed list that (wrongly) holds it. ssh-keygen itself accepts it.
    armored = keygen_sign(tmp_path, rsa_1024_key, MESSAGE)
    weak_line = public_line(rsa_1024_key)
    assert keygen_verify(tmp_path, MESSAGE, armored, weak_line)
    with pytest.raises(sshsig.SignatureError, match="RSA key has 1024 bits; at least 2048 are required"):
        sshsig.verify(MESSAGE, armored, [weak_line])


# -- Ed25519 through libsodium ---------------------------------------------------------------

ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493
# Encodings of points of small order (1, 2, 4 and 8): keys under which one signature can
# verify for many messages. OpenSSL's check accepts (identity, identity, S = 0) for any message.
SMALL_ORDER_POINTS = [
    bytes([1]) + bytes(31),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes(32),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
]


def _openssl_accepts(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _libsodium_accepts(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        sshsig.LibsodiumEd25519Key(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def test_ed25519_signatures_are_checked_by_libsodium(keys: dict[str, Path]) -> None:
    signature = sshsig.sign(MESSAGE, str(keys["ed25519"]))
    key = sshsig._load_public_key(sshsig.parse(signature).public_blob, "ssh-ed25519")
    assert isinstance(key, sshsig.LibsodiumEd25519Key)
    assert sshsig.verify(MESSAGE, signature, [public_line(keys["ed25519"])])


@settings(max_examples=300)
@given(message=st.binary(max_size=200), data=st.data())
def test_libsodium_accepts_no_ed25519_signature_that_openssl_refuses(message: bytes, data: st.DataObject) -> None:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(data.draw(st.binary(min_size=32, max_size=32)))
    public, signature = private.public_key().public_bytes_raw(), private.sign(message)
    assert _openssl_accepts(public, signature, message) and _libsodium_accepts(public, signature, message)
    s = int.from_bytes(signature[32:], "little")
    flipped = bytearray(signature)
    flipped[data.draw(st.integers(0, 63))] ^= data.draw(st.integers(1, 255))
    forgeries = [signature[:32] + (s + ED25519_ORDER).to_bytes(32, "little"), bytes(flipped)]  # S not reduced
    for forged in forgeries:
        assert not _libsodium_accepts(public, forged, message) or _openssl_accepts(public, forged, message)
    other = message + data.draw(st.binary(min_size=1, max_size=8))
    assert not _libsodium_accepts(public, signature, other)


@pytest.mark.parametrize("point", SMALL_ORDER_POINTS, ids=lambda point: point.hex()[:8])
def test_libsodium_refuses_small_order_keys_openssl_would_let_through(point: bytes) -> None:
    forged = SMALL_ORDER_POINTS[0] + bytes(32)  # R the identity, S = 0
    assert not _libsodium_accepts(point, forged, MESSAGE)
    if point == SMALL_ORDER_POINTS[0]:
        assert _openssl_accepts(point, forged, MESSAGE)
