"""The web portal (QPR_0_WEB): the only package that imports Starlette and uvicorn.

It calls the same domain as the SFTP edge — the login policy, bans, TOTP, mailbox,
listing, receipts and the upload acceptance path — and adds only what a browser
needs: server-side sessions, CSRF tokens, headers, HTML pages and HTTP downloads.
"""
