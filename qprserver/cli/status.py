"""``status``: what the running instance's operations listener says about it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import click

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import emit, json_option

# Seconds to wait for the answer (the readiness checks take at most 5 s each).
TIMEOUT = 15.0


def _target(host: str) -> str:
    """Where to reach a listener bound to ``host`` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@click.command("status")
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Health and readiness of the running instance (from its [metrics] listener)."""
    metrics = app.settings.metrics
    if not metrics.enabled:
        raise click.ClickException(
            "the operations listener is off; set [metrics] enabled = true and restart serve"
        )
    url = f"http://{_target(metrics.host)}:{metrics.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:  # 503: not ready; the body says why
        body = exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(f"no running instance answers at {url} ({reason})") from None
    try:
        data = json.loads(body)
        checks = dict(data["checks"])
    except (ValueError, KeyError, TypeError):
        raise click.ClickException(f"{url} gave no readiness report") from None

    def text(report: dict[str, object]) -> None:
        click.echo(f"status: {report['status']}")
        for name, result in checks.items():
            click.echo(f"  {name}: {result}")

    emit(data, as_json=as_json, text=text)
    if data.get("status") != "ready":
        raise SystemExit(1)
