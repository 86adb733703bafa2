"""Accounts: provisioning, keys and passwords (``service``), their states and roles
(``enums``), who may log in now and by which channel (``access``), and who is logged
in where (``sessions``)."""
