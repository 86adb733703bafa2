"""The SFTP edge: the only package that imports asyncssh."""
