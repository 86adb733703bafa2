"""Blob storage: ``base`` (the Protocols every consumer uses), ``local`` (the file-system
backend, the only module that knows where a blob lives on disk), ``s3`` with ``s3read``
and ``s3client`` (the S3 backend), ``spool`` (this node's uploads in progress)."""
