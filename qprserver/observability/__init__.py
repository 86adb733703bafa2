"""What operators see of a running server: its log, metrics, health and readiness.

``logs`` renders every record of the process (ours and the libraries'); ``events``
is what the domain calls when something happened (one log event, its metrics);
``metrics`` holds the Prometheus instruments; ``listener`` serves ``/metrics``,
``/healthz`` and ``/readyz``; ``systemd`` speaks the service manager's notify protocol.
"""
