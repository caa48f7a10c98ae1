"""Reporter settings: defaults < TOML file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from bk_reporter.settings import Settings, SettingsError, load, mask_url


def test_each_source_overrides_the_one_before(tmp_path: Path) -> None:
    config = tmp_path / "reporter.toml"
    config.write_text('listen = "0.0.0.0:9000"\npublic_reads = true\npool_size = 4\ndata_dir = "/srv/from-file"\n')
    environ = {"BK_REPORTER_POOL_SIZE": "8", "BK_REPORTER_DATA_DIR": "/srv/from-env"}
    settings = load({"data_dir": "/srv/from-flag"}, config, environ)
    assert (settings.listen, settings.pool_size, settings.data_dir) == ("0.0.0.0:9000", 8, Path("/srv/from-flag"))
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9000)


def test_the_config_file_may_come_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "reporter.toml"
    config.write_text('database_url = "postgresql://app@db/bk"\n')
    settings = load({}, None, {"BK_REPORTER_CONFIG": str(config)})
    assert settings.database_url == "postgresql://app@db/bk" and not settings.embedded


def test_without_a_database_url_the_reporter_is_embedded() -> None:
    settings = load({}, None, {})
    assert settings.embedded and settings.database_url is None
    assert settings.listen == "127.0.0.1:8080"
    assert settings.max_manifest_bytes == 256 * 1024 and settings.max_batch_bytes == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BK_REPORTER_POOL_SIZE": "many"}, "pool_size must be an integer"),
        ({"BK_REPORTER_MAX_BATCH_BYTES": "0"}, "max_batch_bytes must be positive"),
        ({"BK_REPORTER_INGEST_BURST": "0"}, "ingest_burst must be positive"),
        ({"BK_REPORTER_INGEST_REQUESTS_PER_MINUTE": "ten"}, "ingest_requests_per_minute must be an integer"),
        ({"BK_REPORTER_LISTEN": "8080"}, "listen must be HOST:PORT"),
        ({"BK_REPORTER_LISTEN": "[::1]:99999"}, "listen must be HOST:PORT"),
        ({"BK_REPORTER_TLS_CERT": "/etc/cert.pem"}, "tls_cert and tls_key must be given together"),
    ],
)
def test_unusable_values_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load({}, None, environ)


def test_a_config_file_with_unknown_keys_or_bad_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "reporter.toml"
    config.write_text('listne = "127.0.0.1:1"\n')
    with pytest.raises(SettingsError, match="unknown keys: listne"):
        load({}, config, {})
    config.write_text("listen = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load({}, config, {})
    with pytest.raises(SettingsError, match="cannot read"):
        load({}, tmp_path / "absent.toml", {})


def test_ipv6_listen_addresses_are_understood() -> None:
    settings = load({"listen": "[::1]:8443"}, None, {})
    assert (settings.listen_host, settings.listen_port) == ("::1", 8443)


def test_passwords_never_reach_the_logs() -> None:
    assert mask_url("postgresql://app:s3cret@db.example:5432/bk") == "postgresql://app:***@db.example:5432/bk"
    assert mask_url("postgresql://app@/bk?host=/run") == "postgresql://app@/bk?host=/run"
    view = Settings(
        database_url="postgresql://a:pw@h/d",
        owner_database_url="postgresql://o:pw2@h/d",
        page_basic_password="hunter2",
        page_bearer_token="t0ken",
    ).public_view()
    assert not {"pw", "hunter2", "t0ken"} & set(
        str(view).replace("***", "").replace(":", " ").replace("@", " ").split()
    )
    assert (view["page_basic_password"], view["page_bearer_token"], view["page_basic_user"]) == ("***", "***", None)


@pytest.mark.parametrize(
    "environ",
    [{"BK_REPORTER_PAGE_BASIC_USER": "ops"}, {"BK_REPORTER_PAGE_BASIC_PASSWORD": "s3cret"}],
    ids=["user-without-password", "password-without-user"],
)
def test_half_set_basic_auth_credentials_are_refused(environ: dict[str, str]) -> None:
    # Half a credential would leave the pages open while the operator believes them closed.
    with pytest.raises(SettingsError, match="page_basic_user and page_basic_password must be given together"):
        load({}, None, environ)


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080", "reporter.example:8080"])
def test_a_reachable_listener_without_page_credentials_is_refused(listen: str) -> None:
    with pytest.raises(SettingsError, match="is not a loopback address and the pages have no credentials"):
        load({"listen": listen}, None, {})


@pytest.mark.parametrize(
    "environ",
    [
        {"BK_REPORTER_PUBLIC_READS": "true"},
        {"BK_REPORTER_PAGE_BEARER_TOKEN": "t0ken"},
        {"BK_REPORTER_PAGE_BASIC_USER": "ops", "BK_REPORTER_PAGE_BASIC_PASSWORD": "s3cret"},
    ],
    ids=["public-reads", "bearer-token", "basic-auth"],
)
def test_a_reachable_listener_starts_with_credentials_or_explicit_public_reads(environ: dict[str, str]) -> None:
    assert load({"listen": "0.0.0.0:8080"}, None, environ).listen_host == "0.0.0.0"


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "127.0.0.2:8080", "[::1]:8080", "localhost:8080"])
def test_a_loopback_listener_needs_no_page_credentials(listen: str) -> None:
    assert not load({"listen": listen}, None, {}).public_reads


def test_public_reads_must_be_a_boolean(tmp_path: Path) -> None:
    config = tmp_path / "reporter.toml"
    config.write_text('public_reads = "yes"\n')
    with pytest.raises(SettingsError, match="public_reads must be true or false"):
        load({}, config, {})


def test_the_ingest_listener_needs_its_own_port() -> None:
    with pytest.raises(SettingsError, match="needs a port other than listen's"):
        load({"listen": "127.0.0.1:8080", "ingest_listen": "0.0.0.0:8080"}, None, {})
    assert load({"ingest_listen": "0.0.0.0:8081"}, None, {}).ingest_listen_port == 8081
