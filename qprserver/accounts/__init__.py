"""Accounts: provisioning, keys, passwords, second factors and who may log in (``service``)."""
