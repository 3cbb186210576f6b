"""Secrets out of what is shown: the password and the query values of a URL, wherever it appears.

A task's URL may carry credentials (``http://user:secret@host/hook?api_key=...``)
and so may a store URL. The real URL is used to connect; everything that shows
one (errors, run records, the API, logs, the CLI) shows ``redact_url`` of it,
or ``redact_text`` of a message that may quote one (an exception's text does).
The user name, host, path and query parameter names stay: they are what an
operator needs to tell which endpoint failed.
"""

from __future__ import annotations

import re

MASK = "***"

# ``scheme://user:password@``: the user stops at the first ':' (and holds no '/'),
# the password runs to the last '@' before the query, so that a password with an
# unescaped '/' or '@' in it is hidden whole.
_CREDENTIALS = re.compile(r"^(?P<start>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^?]*@")
# A URL inside text: from its scheme to the first space or quote (an exception's
# ``url='...'``), not counting punctuation that ends the sentence around it.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]}]")


def redact_url(url: str) -> str:
    """``url`` with its password and the value of each query parameter replaced by ``***``.

    ``http://user:secret@host/hook?api_key=abc&v=2#top`` becomes
    ``http://user:***@host/hook?api_key=***&v=***#top``. Text that is not a
    ``scheme://`` URL (``memory:``) comes back unchanged. Redacting twice
    changes nothing more.
    """
    if "://" not in url:
        return url
    url = _CREDENTIALS.sub(rf"\g<start>:{MASK}@", url, count=1)
    head, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_mark, fragment = rest.partition("#")
    return head + question + "&".join(_mask_value(pair) for pair in query.split("&")) + hash_mark + fragment


def _mask_value(pair: str) -> str:
    name, equals, value = pair.partition("=")
    return f"{name}={MASK}" if equals and value else pair


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (see ``redact_url``): for messages that may quote one."""
    if "://" not in text:  # the common case costs one scan
        return text
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact_text(text)
