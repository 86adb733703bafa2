"""Mail: the transactional outbox (``outbox``), its templates and the SMTP sending."""
