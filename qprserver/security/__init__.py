"""Security primitives: passwords, TOTP, bans, SSH public keys and host keys."""
