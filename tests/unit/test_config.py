from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from qprserver.config import Settings, load_config, parse_config, setting_keys
from qprserver.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "qprserver.example.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qpr.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _lookup(data: dict[str, object], dotted: str) -> bool:
    node: object = data
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return False
        if part == "*":
            rest = ".".join(parts[i + 1 :])
            return bool(node) and all(_lookup(v, rest) for v in node.values())
        if part not in node:
            return False
        node = node[part]
    return True


def test_every_setting_is_documented_in_the_example_config() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    missing = [key for key in setting_keys() if not _lookup(data, key)]
    assert missing == []


def test_example_config_loads_and_resolves_paths_against_its_folder() -> None:
    settings = load_config(EXAMPLE)
    root = EXAMPLE.parent.parent
    assert settings.storage.data_dir == root / "var" / "data"
    assert settings.server.host_keys[0] == root / "keys" / "ssh_host_ed25519_key"
    assert settings.database.url == f"sqlite+aiosqlite:///{root / 'var' / 'qprserver.db'}"
    assert set(settings.kinds) == {"pruefbericht", "qb_c1", "qualitaetsbericht"}


def test_example_defaults_match_the_code_defaults() -> None:
    settings = load_config(EXAMPLE)
    defaults = Settings()
    assert settings.server.ciphers == defaults.server.ciphers
    assert settings.server.port == defaults.server.port
    assert settings.storage.max_upload_bytes == defaults.storage.max_upload_bytes


def test_unknown_key_stops_with_its_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nprot = 22\n")
    with pytest.raises(ConfigError, match=r"qpr\.toml: server\.prot: unknown key"):
        load_config(path)


def test_wrong_type_stops_with_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, '[server]\nport = "2222"\n')
    with pytest.raises(ConfigError, match=r"server\.port: Input should be a valid integer"):
        load_config(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(_write(tmp_path, "[server\n"))


def test_kind_pattern_needs_an_ik_group(tmp_path: Path) -> None:
    path = _write(tmp_path, "[kinds.x]\npattern = '^.*\\.pdf$'\n")
    with pytest.raises(ConfigError, match=r"kinds\.x\.pattern: .*named group"):
        load_config(path)


def test_unsupported_database_driver_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '[database]\nurl = "mysql://x"\n')
    with pytest.raises(ConfigError, match=r"database\.url"):
        load_config(path)


def test_absolute_paths_stay_absolute(tmp_path: Path) -> None:
    settings = parse_config({"storage": {"data_dir": "/srv/qpr"}}, tmp_path / "c.toml")
    assert settings.storage.data_dir == Path("/srv/qpr")


def test_config_comes_from_the_environment_when_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "[server]\nport = 2299\n")
    monkeypatch.setenv("QPRSERVER_CONFIG", str(path))
    assert load_config().server.port == 2299
    monkeypatch.delenv("QPRSERVER_CONFIG")
    with pytest.raises(ConfigError, match="QPRSERVER_CONFIG"):
        load_config()


def test_without_a_kinds_section_the_standard_kinds_apply_as_the_example_lists_them(
    tmp_path: Path,
) -> None:
    minimal = load_config(_write(tmp_path, "[server]\nport = 2222\n"))
    assert minimal.kinds == load_config(EXAMPLE).kinds
    assert set(minimal.kinds) == {"pruefbericht", "qb_c1", "qualitaetsbericht"}


def test_a_kinds_section_replaces_the_standard_kinds(tmp_path: Path) -> None:
    text = "[kinds.anlage]\npattern = '^(?P<ik>\\d{9})_anlage\\.zip$'\ncontent = \"zip\"\n"
    assert set(load_config(_write(tmp_path, text)).kinds) == {"anlage"}


def test_the_metrics_listener_may_not_share_the_sftp_port(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nport = 2222\n[metrics]\nenabled = true\nport = 2222\n")
    with pytest.raises(ConfigError, match=r"metrics\.port must differ from server\.port"):
        load_config(path)


def test_an_unknown_log_format_is_refused_with_the_choices(tmp_path: Path) -> None:
    path = _write(tmp_path, '[logging]\nformat = "xml"\n')
    with pytest.raises(ConfigError, match=r"logging\.format: .*auto, json, text"):
        load_config(path)


def test_s3_storage_needs_endpoint_and_bucket_and_names_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, '[storage]\nbackend = "s3"\nbucket = "qpr"\n')
    with pytest.raises(ConfigError, match=r"storage: .*needs endpoint and bucket"):
        load_config(path)
    path = _write(tmp_path, '[storage]\nbackend = "s3"\nendpoint = "ftp://x"\nbucket = "b"\n')
    with pytest.raises(ConfigError, match=r"storage\.endpoint: .*http"):
        load_config(path)


def test_s3_credentials_come_from_the_file_relative_to_the_config_and_stay_out_of_reprs(
    tmp_path: Path,
) -> None:
    from qprserver.config import s3_credentials

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "s3.toml").write_text(
        'access_key_id = "AKID"\nsecret_access_key = "s3cr3t"\n', encoding="utf-8"
    )
    path = _write(
        tmp_path,
        '[storage]\nbackend = "s3"\nendpoint = "http://127.0.0.1:9000"\nbucket = "qpr"\n'
        'credentials_file = "keys/s3.toml"\n',
    )
    credentials = s3_credentials(load_config(path).storage)
    assert credentials.access_key_id == "AKID"
    assert credentials.secret_access_key == "s3cr3t"
    assert "s3cr3t" not in repr(credentials)
    (tmp_path / "keys" / "s3.toml").write_text('access_key_id = "AKID"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="needs access_key_id and secret_access_key"):
        s3_credentials(load_config(path).storage)
