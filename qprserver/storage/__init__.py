"""Blob storage: content-addressed documents and bundles; ``local`` is the file-system backend."""
