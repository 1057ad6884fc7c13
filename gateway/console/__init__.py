"""The web console: plain HTML/CSS/JS served by the admin listener at `/console/`.

The browser logs in with the admin credential once; the server keeps an in-memory session
(`sessions`) named by an HttpOnly, SameSite=Strict cookie, and maps a valid session (plus its
CSRF token on every change) to the admin identity, so the console calls the same audited admin
API routes as scripts do (`gateway.admin.auth`).
"""
