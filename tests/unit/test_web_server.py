"""The portal's listener refuses to serve logins in clear text on a reachable address."""

from __future__ import annotations

from pathlib import Path

import pytest

from qprserver.config import WebSettings
from qprserver.errors import StartupError
from qprserver.web.server import check


def test_plain_http_is_refused_unless_on_loopback_behind_a_named_proxy() -> None:
    with pytest.raises(StartupError, match="trusted_proxies"):
        check(WebSettings(host="0.0.0.0"))
    with pytest.raises(StartupError, match="trusted_proxies"):
        check(WebSettings(host="127.0.0.1"))
    check(WebSettings(host="127.0.0.1", trusted_proxies=["127.0.0.1"]))


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    web = WebSettings(tls_cert=tmp_path / "web.crt", tls_key=tmp_path / "web.key")
    with pytest.raises(StartupError, match=r"web\.crt: web certificate or key missing"):
        check(web)


def test_certificate_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        WebSettings(tls_cert=tmp_path / "web.crt")
