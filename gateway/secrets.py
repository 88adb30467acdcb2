"""Device and service secrets: make them, hash them, check them.

Hashes use Mosquitto's own ``$7$`` format (PBKDF2-SHA512), so the registry's
hashes can be written straight into a Mosquitto password file, and the embedded
broker checks them the same way.

Example::

    secret = new_secret()            # show it once, then forget it
    stored = hash_secret(secret)     # keep only this
    assert verify_secret(secret, stored)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

# Secrets are 32 random bytes, far beyond guessing, so the hash only has to keep a
# leaked registry from being replayed; a modest count keeps many reconnects cheap.
ITERATIONS = 1000
SALT_BYTES = 12


def new_secret(nbytes: int = 32) -> str:
    """A new random secret, URL-safe so it fits in a Traccar Client URL.

    It never starts with ``-``: staff paste secrets into command lines
    (``jisaku flash --secret …``), where a leading dash reads as an option.
    """
    while True:
        secret = secrets.token_urlsafe(nbytes)
        if not secret.startswith("-"):
            return secret


def hash_secret(secret: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        _, scheme, iterations, salt, digest = stored.split("$")
        if scheme != "7":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac("sha512", secret.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
