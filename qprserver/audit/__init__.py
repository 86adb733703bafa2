"""The audit log: a keyed hash chain of every change (``chain``) and its signed checkpoint outside
the database (``seal``)."""
