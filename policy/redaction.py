"""Secret redaction for everything the service writes down: known secret values plus token patterns."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

MARKER = "[REDACTED]"
MIN_SECRET_LENGTH = 8
# Re-running the known-value pass only matters for secrets that contain marker characters; bounded anyway.
_MAX_KNOWN_PASSES = 4

# Key names whose values are secret. The word must END the key so that `input_tokens`, `token_count`
# or `secrets` (lists of secret *names*) are not redacted.
_KEY_WORDS = (
    r"client[_-]?secret|secret[_-]?access[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|api[_-]?key"
    r"|password|passwd|passphrase|secret|token|authorization|credentials?|cookie"
)
_SENSITIVE_KEY = re.compile(rf"(?:^|[^a-z0-9])(?:{_KEY_WORDS})$", re.IGNORECASE | re.ASCII)

# Every alternative that starts with a letter consumes the whole alphanumeric run it starts in (greedy
# class + lookarounds), so a match never ends right before another one; that keeps redaction idempotent.
_AN = r"(?<![A-Za-z0-9])"
_PATTERN = "|".join(
    (
        # PEM private key blocks; an unterminated block is redacted to the end of the text.
        r"(?P<pem>(?P<pem_begin>-----BEGIN[ A-Z0-9]*PRIVATE KEY-----)"
        r"(?:.*?(?P<pem_end>-----END[ A-Z0-9]*PRIVATE KEY-----)|.*))",
        rf"(?P<jwt>{_AN}eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)",
        rf"(?P<github>{_AN}(?:gh[pousr]_[A-Za-z0-9]{{20,}}|github_pat_[A-Za-z0-9_]{{20,}}))",
        rf"(?P<sk>{_AN}sk-[A-Za-z0-9_-]{{20,}})",
        rf"(?P<aws>{_AN}(?:AKIA|ASIA)[0-9A-Z]{{16}}(?![A-Za-z0-9]))",
        # user:password@ in URLs: keep the scheme and user, drop the password.
        r"(?P<url>(?P<url_keep>://[^\s/@:\[\]\"'\\]*:)[^\s/@\"'\\]+(?=@))",
        # key=value, key: value, "key": "value", Authorization: Bearer xyz.
        rf"(?P<kv>(?P<kv_key>(?ai:{_KEY_WORDS})[\"']?[ \t]*[:=][ \t]*"
        r"(?ai:(?:bearer|basic|token|digest)[ \t]+)?)"
        r"(?P<kv_val>\"(?:[^\"\\\n]|\\[^\n])*\"|'[^'\n]*'|[\"']?(?:[^\s\"',;&{}\\]|\\[^\n])+))",
        rf"(?P<bearer>(?P<bearer_keep>{_AN}(?ai:bearer)[ \t]+)[A-Za-z0-9._~+/=-]{{8,}})",
    )
)
_PATTERNS = re.compile(_PATTERN, re.DOTALL)
# Every match of _PATTERNS contains one of these (lower-cased); checking them with `in` first is ~100x
# faster than running the regex over text that has nothing to redact, which is most text.
_TRIGGERS = (
    "-----begin",
    "eyj",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "sk-",
    "akia",
    "asia",
    "://",
    "key",
    "secret",
    "token",
    "passw",
    "passphrase",
    "authorization",
    "credential",
    "cookie",
    "bearer",
)
_TRIGGER_RE = re.compile("|".join(re.escape(t) for t in _TRIGGERS))
# For whole JSON documents, where a bare "key" (idempotency_key, semantic_key...) is common: every
# pattern match and every sensitive key contains one of these, matched against lower-cased text.
# A key word counts only where it can end a sensitive key or start a `key: value` match: followed by
# a quote (a key's end; the kv pattern's optional quote, escaped as \"), an escape (\n before a key's
# end, \t), a space, `:` or `=`. So `allow_secrets` or `secret_names` do not make a document dirty.
_DOC_TRIGGER_RE = re.compile(
    r"-----begin|eyj|gh[pousr]_|github_pat_|sk-|akia|asia|://|bearer|passw|(?:"
    + _KEY_WORDS.lower()
    + r")[\"'\\ :=]"
)
# Python's regex engine tries every alternative of _DOC_TRIGGER_RE at nearly every position (~60 ns a
# character); substring tests are ~100x cheaper. Every match of _DOC_TRIGGER_RE contains one of these,
# so the regex runs only on documents that hold one (in audit rows: `allow_secrets`, a real token...).
# The document triggers hold the same words as _TRIGGERS, except that a bare "key" only counts as part
# of a sensitive key name (access_key, private_key, api_key...).
_DOC_WORDS = (
    *(t for t in _TRIGGERS if t != "key"),
    "access",
    "private",
    "api_key",
    "api-key",
    "apikey",
)


# The longest text a _DOC_TRIGGER_RE match can span (18 today: its alternatives are literals and key
# words of bounded length plus one character, without repetition; a unit test holds the bound).
_DOC_MATCH_MAX = 32


def _doc_triggered(lowered: str) -> bool:
    """Whether lower-cased JSON text may hold a pattern match or a sensitive key.

    Every match contains one of `_DOC_WORDS` and spans at most `_DOC_MATCH_MAX` characters, so the
    regex runs only over windows around each occurrence of a word the text holds: a long audit
    document with `allow_secrets` in it costs a few short searches, not a scan of the whole text.
    """
    for word in _DOC_WORDS:
        if word not in lowered:  # the common case: `in` is cheaper than a method call
            continue
        at = lowered.find(word)
        while at >= 0:
            start = max(0, at - _DOC_MATCH_MAX)
            if _DOC_TRIGGER_RE.search(lowered, start, at + len(word) + _DOC_MATCH_MAX) is not None:
                return True
            at = lowered.find(word, at + 1)
    return False


# Pieces of text (between double quotes) known to hold no document trigger, as `_pieces_triggered`
# checked them; bounded (new ids and timestamps arrive with every change, so it is cleared when full).
_CLEAN_PIECES: set[str] = set()
_CLEAN_PIECES_MAX = 20_000


def _pieces_triggered(text: str) -> bool:
    """`_doc_triggered(text.lower())` may be True (False: certainly not), from the pieces of `text`
    between double quotes that have not been found clean before.

    A match of `_DOC_TRIGGER_RE` holds a double quote only as its last character, so it lies within
    one piece, or is a piece's end and the quote after it. Every piece is followed by a quote in the
    joined text this checks, so a match in `text` is one there too (ASCII, which lower-casing maps
    character by character), whatever else was left out. Audit documents repeat keys and values
    (column names, a change's timestamp, trace id and ids): the pieces not seen before are a few
    short ones, and their check costs less than the scan of the whole text for every word."""
    new = set(text.split('"'))
    new.difference_update(_CLEAN_PIECES)
    if not new:
        return False
    if _doc_triggered('"'.join(new).lower() + '"'):
        return True
    if len(_CLEAN_PIECES) + len(new) > _CLEAN_PIECES_MAX:
        _CLEAN_PIECES.clear()
    _CLEAN_PIECES.update(new)
    return False


# JSON escapes these characters in strings, so a value containing one cannot be found in JSON text.
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')
_SHORT = 4096
_CHUNK = 16 * 1024
_NAME_CLEAN = re.compile(r"[^A-Za-z0-9_]+")


def _replace_pattern(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "pem":
        # Newlines are kept (never removed) so redaction cannot change how later quotes pair up.
        return f"{match.group('pem_begin')}\n{MARKER}\n{match.group('pem_end') or ''}"
    if kind == "url":
        return match.group("url_keep") + MARKER
    if kind == "bearer":
        return match.group("bearer_keep") + MARKER
    if kind == "kv":
        value = match.group("kv_val")
        quote = value[0] if value[0] in "\"'" else ""
        closing = quote if quote and len(value) > 1 and value[-1] == quote else ""
        return match.group("kv_key") + quote + MARKER + closing
    return MARKER


def _sub_if_triggered(text: str) -> str:
    lowered = text.lower()
    # One regex call beats a Python loop of `in` on short strings; `in` (memchr) wins on long ones.
    if len(text) < _SHORT:
        hit = _TRIGGER_RE.search(lowered) is not None
    else:
        hit = any(trigger in lowered for trigger in _TRIGGERS)
    return _PATTERNS.sub(_replace_pattern, text) if hit else text


def _redact_patterns(text: str) -> str:
    # Only PEM blocks span lines, so without one, large text is redacted in line-aligned chunks and the
    # regex runs only on chunks that contain a trigger.
    if len(text) <= _CHUNK or "-----BEGIN" in text:
        return _sub_if_triggered(text)
    parts: list[str] = []
    start = 0
    while start < len(text):
        end = text.find("\n", start + _CHUNK)
        end = len(text) if end < 0 else end + 1
        parts.append(_sub_if_triggered(text[start:end]))
        start = end
    return "".join(parts)


def is_sensitive_key(key: str) -> bool:
    """Whether a mapping key names a secret value (password, api_key, GITHUB_TOKEN, Authorization...)."""
    return bool(_SENSITIVE_KEY.search(key))


class Redactor:
    """Removes known secret values and recognisable secrets (tokens, keys, credentials) from text and data."""

    def __init__(
        self,
        secrets: Iterable[str | None] = (),
        *,
        named: Mapping[str, str | Iterable[str | None] | None] | None = None,
        min_length: int = MIN_SECRET_LENGTH,
    ) -> None:
        labels: dict[str, str] = {}
        for name, values in (named or {}).items():
            label = _NAME_CLEAN.sub("_", name).strip("_")
            marker = f"[REDACTED:{label}]" if label else MARKER
            for value in [values] if isinstance(values, str) or values is None else values:
                if value is not None and len(value) >= min_length:
                    labels.setdefault(value, marker)
        for value in secrets:
            if value is not None and len(value) >= min_length:
                labels.setdefault(value, MARKER)
        # A value that is itself part of a marker would make redaction never settle.
        markers = " ".join({MARKER, *labels.values()})
        self._labels = {value: marker for value, marker in labels.items() if value not in markers}
        self._known: re.Pattern[str] | None = None
        # Whether every known value reads the same inside JSON text (see redact_json).
        self._json_transparent = not any(_JSON_ESCAPED.search(value) for value in self._labels)
        if self._labels:
            alternation = "|".join(re.escape(v) for v in sorted(self._labels, key=len, reverse=True))
            self._known = re.compile(alternation)

    @property
    def known_count(self) -> int:
        """How many known secret values this redactor removes."""
        return len(self._labels)

    def _replace_known(self, match: re.Match[str]) -> str:
        return self._labels[match.group(0)]

    def redact_text(self, text: str) -> str:
        """The text with every known secret and secret-looking pattern replaced by a marker."""
        known = self._known
        # `in` per value is far faster than the alternation regex on text without any of them.
        if known is None or not self._contains_known(text):
            return _redact_patterns(text)
        text = _redact_patterns(known.sub(self._replace_known, text))
        # Only a secret containing marker characters can reappear; redo until it settles.
        for _ in range(_MAX_KNOWN_PASSES):
            if not self._contains_known(text):
                break
            text = _redact_patterns(known.sub(self._replace_known, text))
        return text

    def _contains_known(self, text: str) -> bool:
        if len(text) < _SHORT and self._known is not None:
            return self._known.search(text) is not None
        return any(value in text for value in self._labels)

    def redact_bytes(self, data: bytes) -> bytes:
        """Like redact_text for raw output; bytes that are not UTF-8 pass through unchanged."""
        text = data.decode("utf-8", "surrogateescape")
        return self.redact_text(text).encode("utf-8", "surrogateescape")

    def redact_obj(self, obj: Any) -> Any:
        """A deep copy of JSON-like data with values of sensitive keys removed and strings redacted."""
        if isinstance(obj, str):
            return self.redact_text(obj)
        if isinstance(obj, Mapping):
            return self._redact_mapping(obj, self.redact_obj)
        if isinstance(obj, list | tuple | set | frozenset):
            return [self.redact_obj(item) for item in obj]
        if isinstance(obj, bytes | bytearray):
            return self.redact_bytes(bytes(obj))
        return obj

    def redact_json(self, obj: Any) -> Any:
        """`redact_obj` for JSON-ready data, faster when most of it needs nothing; clean parts are shared.

        A subtree is serialised once (orjson); when its text holds no trigger of any pattern or
        sensitive key and no known secret, nothing in it can change and it is returned as it is.
        Only dirty subtrees are walked. The check is sound: JSON escaping touches only quotes,
        backslashes and control characters, none of which is in a trigger, so a trigger inside a
        string or key is still a substring of the text (and lower-casing is per character).
        """
        if not isinstance(obj, dict | list):
            return self.redact_obj(obj)
        try:
            text = orjson.dumps(obj).decode()
        except (TypeError, orjson.JSONEncodeError):  # not JSON-ready (bytes, sets, big ints...)
            return self.redact_obj(obj)
        if not _doc_triggered(text.lower()) and not (
            self._known is not None and (not self._json_transparent or self._contains_known(text))
        ):
            return obj
        if isinstance(obj, list):
            return [self.redact_json(item) for item in obj]
        return self._redact_mapping(obj, self.redact_json)

    def redact_json_text(self, obj: Any, text: str) -> Any:
        """`redact_json` for JSON-ready data whose JSON text (any encoding that escapes only quotes,
        backslashes and control characters, as orjson and `json.dumps(ensure_ascii=False)` do) the
        caller has already: when the text is clean, `obj` itself comes back with no further work."""
        if self.json_text_clean(text):
            return obj
        return self.redact_json(obj)

    def json_text_clean(self, text: str) -> bool:
        """Whether JSON text (as for `redact_json_text`) holds nothing redaction would change.

        `text` may be several documents' texts joined: each document's text is then a substring of
        it, so what makes one of them dirty makes the whole dirty (a trigger or a known secret found
        across a boundary only makes a clean whole look dirty). One check of a change's documents
        together costs about what one document's check does, when all of them are clean."""
        return not _pieces_triggered(text) and not (
            self._known is not None and (not self._json_transparent or self._contains_known(text))
        )

    def _redact_mapping(self, obj: Mapping[Any, Any], values: Callable[[Any], Any]) -> dict[Any, Any]:
        """Keys redacted, values of sensitive keys replaced by the marker, other values by `values`."""
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            if isinstance(key, str):
                if is_sensitive_key(key) and value is not None:
                    out[self.redact_text(key)] = MARKER
                    continue
                key = self.redact_text(key)
            out[key] = values(value)
        return out
