"""qprserver: SFTP-first bulk document exchange for the care and hospital quality system."""

__version__ = "0.1.0"
