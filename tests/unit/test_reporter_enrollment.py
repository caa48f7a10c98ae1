"""Host keys as an operator hands them over: one line, or an allowed_signers file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bk_evidence import sshsig
from bk_reporter.hosts import EnrollmentError, host_key, parse_allowed_signers
from support.keys import make_key, public_line


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("keys")
    return {kind: public_line(make_key(directory, kind, kind)) for kind in ("ed25519", "ecdsa256", "rsa")}


def test_a_key_line_is_normalised_and_fingerprinted(keys: dict[str, str]) -> None:
    key = host_key("web1.example.net", keys["ed25519"])
    assert key.public_key == sshsig.normalize_public_key(keys["ed25519"])
    assert key.fingerprint == sshsig.fingerprint(keys["ed25519"]) and key.fingerprint.startswith("SHA256:")
    assert (key.key_type, key.comment) == ("ssh-ed25519", keys["ed25519"].split()[2])


@pytest.mark.parametrize("name", ["", "web 1", "-web", "web1;rm", "a" * 254, "web\n1", "web1\n"])
def test_unusable_host_names_are_refused(name: str, keys: dict[str, str]) -> None:
    with pytest.raises(EnrollmentError, match="not a usable host name"):
        host_key(name, keys["ed25519"])


def test_unusable_keys_are_refused() -> None:
    with pytest.raises(EnrollmentError, match="not an OpenSSH public key"):
        host_key("web1", "ssh-ed25519 bm90IGEga2V5")


def test_an_allowed_signers_file_yields_every_principal_and_key(keys: dict[str, str]) -> None:
    text = (
        "# comment\n\n"
        f"web1,web1.example.net {keys['ed25519']}\n"
        f'db1 namespaces="file,bk-manifest@v1" {keys["ecdsa256"]}\n'
        f'"hub1" {keys["rsa"]} hub key\n'
    )
    parsed = [(key.host, key.key_type) for key in parse_allowed_signers(text)]
    assert parsed == [
        ("web1", "ssh-ed25519"),
        ("web1.example.net", "ssh-ed25519"),
        ("db1", "ecdsa-sha2-nistp256"),
        ("hub1", "ssh-rsa"),
    ]


def test_a_bad_allowed_signers_file_names_every_bad_line(keys: dict[str, str]) -> None:
    text = (
        f"web1 {keys['ed25519']}\n"
        f"*.example.net {keys['ed25519']}\n"
        f'db1 namespaces="file" {keys["ecdsa256"]}\n'
        f"ca cert-authority {keys['rsa']}\n"
        f'old valid-before="20200101" {keys["rsa"]}\n'
        "web2 ssh-ed25519 garbage\n"
    )
    with pytest.raises(EnrollmentError) as refused:
        parse_allowed_signers(text)
    message = str(refused.value)
    for expected in (
        "line 2: principal patterns",
        "line 3: the key is restricted to namespaces",
        "line 4: the option cert-authority",
        "line 5: the option valid-before",
        "line 6: not an OpenSSH public key",
    ):
        assert expected in message
    assert "line 1" not in message


def test_an_empty_file_enrolls_nothing() -> None:
    assert parse_allowed_signers("# nothing yet\n") == []


def test_keys_in_files_made_by_ssh_keygen_parse(tmp_path: Path, keys: dict[str, str]) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text("".join(f"host-{kind} {line}\n" for kind, line in keys.items()))
    assert len(parse_allowed_signers(signers.read_text())) == 3


def test_an_rsa_key_under_2048_bits_is_refused_at_enrolment(tmp_path: Path) -> None:
    weak = tmp_path / "key_rsa1024"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(weak)], check=True)
    with pytest.raises(EnrollmentError, match="RSA key has 1024 bits; at least 2048 are required"):
        host_key("web1", public_line(weak))
