"""Mail.

``emails``: one function per template folder in ``templates/email/``, returning that
template's typed context, and ``render``, the one place mails are rendered.
``outbox``: the ``Notifier`` that queues a rendered mail in the caller's transaction
under a dedupe key, the digests, and the drain the mail-send job runs.
``smtp``: building the message (headers, both bodies) and delivering it over SMTP.
"""
