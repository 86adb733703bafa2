"""The document exchange, channel-neutral: uploads and their checks, routing, mailboxes,
receipts and download coverage, quotas, weekly bundles and retention."""
