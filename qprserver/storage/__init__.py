"""Blob storage: ``base`` (the Protocols every consumer uses), ``local`` (the file-system
backend, the only module that knows where a blob lives), ``spool`` (this node's
uploads in progress)."""
