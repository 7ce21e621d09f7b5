"""Redaction of known secrets and secret-looking patterns."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import redaction
from policy.redaction import MARKER, Redactor, is_sensitive_key

GH = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
KNOWN = "s3cr3t-webhook-value"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([KNOWN, "short"], named={"GITHUB_TOKEN": "tok-known-12345678", "EMPTY": None})


def test_known_values_named_and_unnamed(redactor: Redactor) -> None:
    out = redactor.redact_text(f"a {KNOWN} b tok-known-12345678 c")
    assert out == "a [REDACTED] b [REDACTED:GITHUB_TOKEN] c"


def test_short_values_are_ignored(redactor: Redactor) -> None:
    assert redactor.redact_text("this is short") == "this is short"
    assert redactor.known_count == 2


def test_longest_known_value_wins() -> None:
    r = Redactor(named={"A": "abcdefgh", "B": "abcdefgh-longer"})
    assert r.redact_text("x abcdefgh-longer y") == "x [REDACTED:B] y"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"token {GH} end", "token [REDACTED] end"),
        ("gho_" + "x" * 36, MARKER),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", MARKER),
        ("key sk-ant-api03-" + "A" * 40 + " end", f"key {MARKER} end"),
        ("sk-proj-" + "b" * 30, MARKER),
        ("aws AKIAIOSFODNN7EXAMPLE here", f"aws {MARKER} here"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer [REDACTED]"),
        ("authorization: token deadbeefcafe", "authorization: token [REDACTED]"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"),
        ("X-Api-Key: abcd1234", "X-Api-Key: [REDACTED]"),
        ("curl -H 'Bearer abcdefgh12345'", "curl -H 'Bearer [REDACTED]'"),
        (
            "git clone https://x-access-token:abc123@github.com/o/r",
            "git clone https://x-access-token:[REDACTED]@github.com/o/r",
        ),
        ("postgres://user:p4ss@db:5432/x", "postgres://user:[REDACTED]@db:5432/x"),
        ("password=hunter2 next", "password=[REDACTED] next"),
        ("DB_PASSWORD = 'hunter 2'", "DB_PASSWORD = '[REDACTED]'"),
        ('{"api_key": "abc\\"def", "n": 1}', '{"api_key": "[REDACTED]", "n": 1}'),
        ("client_secret: xyz", "client_secret: [REDACTED]"),
        ("GITHUB_TOKEN=abc", "GITHUB_TOKEN=[REDACTED]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_-x y", f"jwt {MARKER} y"),
        (
            "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----\nb",
            f"a\n-----BEGIN RSA PRIVATE KEY-----\n{MARKER}\n-----END RSA PRIVATE KEY-----\nb",
        ),
        (
            "x -----BEGIN OPENSSH PRIVATE KEY-----\ntruncated",
            f"x -----BEGIN OPENSSH PRIVATE KEY-----\n{MARKER}\n",
        ),
    ],
)
def test_patterns(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "input_tokens=120 output_tokens: 30 token_count=5 max_tokens=100",
        "task-abcdefghijklmnopqrstuvwxyz0123",
        "https://github.com/o/r.git",
        "user@example.com",
        "the secrets list",
    ],
)
def test_harmless_text_is_kept(text: str) -> None:
    assert Redactor().redact_text(text) == text


def test_sensitive_keys() -> None:
    assert is_sensitive_key("password")
    assert is_sensitive_key("GITHUB_TOKEN")
    assert is_sensitive_key("X-Api-Key")
    assert is_sensitive_key("Authorization")
    assert not is_sensitive_key("input_tokens")
    assert not is_sensitive_key("secrets")
    assert not is_sensitive_key("token_count")


def test_redact_obj_deep(redactor: Redactor) -> None:
    obj = {
        "headers": {"Authorization": "Bearer x", "Accept": "json"},
        "password": {"nested": "y"},
        "token": None,
        "usage": {"input_tokens": 10},
        "cmd": ["echo", KNOWN, ("t", GH)],
        "raw": b"\xff" + KNOWN.encode(),
        KNOWN: 1,
    }
    out = redactor.redact_obj(obj)
    assert out == {
        "headers": {"Authorization": MARKER, "Accept": "json"},
        "password": MARKER,
        "token": None,
        "usage": {"input_tokens": 10},
        "cmd": ["echo", MARKER, ["t", MARKER]],
        "raw": b"\xff" + MARKER.encode(),
        MARKER: 1,
    }
    assert obj["password"] == {"nested": "y"}  # input untouched


def test_redact_bytes_non_utf8(redactor: Redactor) -> None:
    data = b"\xff\xfe bad " + KNOWN.encode() + b" \x80 password=x\n\xc3"
    assert redactor.redact_bytes(data) == b"\xff\xfe bad [REDACTED] \x80 password=[REDACTED]\n\xc3"


# Text near redaction triggers so Hypothesis explores interactions between patterns.
_FRAGMENTS = st.sampled_from(
    [
        "token=",
        "password: ",
        '"api_key": "',
        "'",
        '"',
        "Bearer ",
        "Authorization: ",
        "https://",
        "://",
        ":",
        "@",
        "/",
        "ghp_",
        "sk-",
        "AKIA",
        "eyJ",
        ".",
        "-----BEGIN PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
        "\n",
        " ",
        ",",
        "[REDACTED]",
        "]",
        "[",
        "=",
        GH,
        KNOWN[:5],
    ]
)
_TEXT = st.lists(st.one_of(st.text(max_size=12), _FRAGMENTS), max_size=12).map("".join)
_SECRET = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=8, max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_SECRET, before=_TEXT, after=_TEXT)
def test_known_secret_never_survives(secret: str, before: str, after: str) -> None:
    r = Redactor(named={"S": secret})
    text = before + secret + after
    out = r.redact_text(text)
    if r.known_count:
        assert secret not in out
        assert secret.encode() not in r.redact_bytes(text.encode())
        assert secret not in json.dumps(r.redact_obj({"k": [text]}), ensure_ascii=False)


@settings(max_examples=600)
@given(text=_TEXT)
def test_redaction_is_idempotent(text: str) -> None:
    r = Redactor([KNOWN], named={"GITHUB_TOKEN": GH})
    once = r.redact_text(text)
    assert r.redact_text(once) == once


@settings(max_examples=600)
@given(text=_TEXT)
def test_prefilter_never_skips_a_match(text: str) -> None:
    from policy import redaction

    assert redaction._redact_patterns(text) == redaction._PATTERNS.sub(redaction._replace_pattern, text)


@settings(max_examples=50, deadline=None)
@given(pieces=st.lists(_TEXT, min_size=1, max_size=8))
def test_chunked_large_text_matches_whole_text_regex(pieces: list[str]) -> None:
    from policy import redaction

    filler = ("x" * 70 + "\n") * 400  # pushes each piece into its own chunk
    text = filler.join(pieces).replace("-----BEGIN", "-----Begin")
    assert len(text) > redaction._CHUNK or len(pieces) == 1
    assert redaction._redact_patterns(text) == redaction._PATTERNS.sub(redaction._replace_pattern, text)


def test_escaped_quote_in_unquoted_value_is_stable() -> None:
    r = Redactor()
    once = r.redact_text('TOKEN=" TOKEN=\\"')
    assert once == 'TOKEN=" TOKEN=[REDACTED]'
    assert r.redact_text(once) == once


def test_pem_redaction_keeps_line_structure() -> None:
    r = Redactor()
    text = 'APIKEY:" -----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----"'
    once = r.redact_text(text)
    assert once == 'APIKEY:" -----BEGIN PRIVATE KEY-----\n[REDACTED]\n-----END PRIVATE KEY-----"'
    assert r.redact_text(once) == once


# JSON documents whose keys and strings come from the same trigger-laden text, plus sensitive key names.
_KEY = st.one_of(_TEXT, st.sampled_from(["api_key", "Password", "idempotency_key", "allow_secrets", "x"]))
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=False), _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEY, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=_JSON, secret=st.one_of(_SECRET, st.sampled_from(['with"quote-1', "back\\slash-22", "ctl\n-line-3"]))
)
def test_redact_json_equals_redact_obj(doc: object, secret: str) -> None:
    """The whole-document fast path never keeps anything the walk would have redacted."""
    r = Redactor([KNOWN], named={"GITHUB_TOKEN": GH, "S": secret})
    assert r.redact_json(doc) == r.redact_obj(doc)
    planted = {"a": [doc, {"b": "pre " + secret + " post"}]}
    assert r.redact_json(planted) == r.redact_obj(planted)


def test_redact_json_shares_clean_subtrees_and_walks_dirty_ones(redactor: Redactor) -> None:
    # Key words inside longer keys (`allow_secrets`, `secret_names`) leave a document clean.
    clean = {
        "objective": "Format the code",
        "labels": ["ops"],
        "idempotency_key": "k-1",
        "allow_secrets": False,
        "secret_names": ["deploy"],
    }
    doc = {"clean": clean, "dirty": {"token": "abc", "note": f"uses {KNOWN}"}}
    out = redactor.redact_json(doc)
    assert out["clean"] is clean
    assert out["dirty"] == {"token": MARKER, "note": f"uses {MARKER}"}
    assert doc["dirty"]["token"] == "abc"  # input untouched
    assert redactor.redact_json({"raw": b"x", "s": {1, 2}}) == redactor.redact_obj({"raw": b"x", "s": {1, 2}})


@pytest.mark.parametrize(
    "text",
    [
        "-----begin rsa private key-----",
        "eyjhbg.eyjzdw.x",
        *(f"gh{c}_abc" for c in "pousr"),
        "github_pat_x",
        "sk-abc",
        "akia0",
        "asia0",
        "https://u:p@h",
        "bearer abc",
        "passw",
        *(
            f'"{word}{sep}'
            for word in (
                "client_secret",
                "clientsecret",
                "secret-access-key",
                "access_key",
                "accesskey",
                "secret_key",
                "private-key",
                "privatekey",
                "api_key",
                "api-key",
                "apikey",
                "password",
                "passwd",
                "passphrase",
                "secret",
                "token",
                "authorization",
                "credential",
                "credentials",
                "cookie",
            )
            for sep in ('"', "\\", " ", ":", "=", "'")
        ),
    ],
)
def test_document_words_cover_every_document_trigger(text: str) -> None:
    """The substring pre-check never skips text the trigger regex would flag."""
    assert redaction._DOC_TRIGGER_RE.search(text) is not None
    assert redaction._doc_triggered(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=_JSON, secret=st.one_of(_SECRET, st.sampled_from(['with"quote-1', "back\\slash-22", "ctl\n-line-3"]))
)
def test_redact_json_text_equals_redact_obj_for_either_encoding(doc: object, secret: str) -> None:
    """Given the document's text from the standard encoder (as audit has it) or from orjson, the
    check on that text never keeps anything the walk would have redacted."""
    import json

    import orjson

    r = Redactor([KNOWN], named={"GITHUB_TOKEN": GH, "S": secret})
    planted = {"a": [doc, {"b": "pre " + secret + " post"}]}
    for value in (doc, planted):
        std = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        assert r.redact_json_text(value, std) == r.redact_obj(value)
        try:
            fast = orjson.dumps(value).decode()
        except TypeError:
            continue
        assert r.redact_json_text(value, fast) == r.redact_obj(value)


def test_a_document_trigger_match_is_never_longer_than_the_window() -> None:
    """`_doc_triggered` searches windows of `_DOC_MATCH_MAX` around each word: sound only while no
    match of the trigger regex can be longer."""
    import re._parser as sre_parse  # the width of a compiled pattern is not public API

    lo, hi = sre_parse.parse(redaction._DOC_TRIGGER_RE.pattern).getwidth()
    assert 0 < lo <= hi <= redaction._DOC_MATCH_MAX


_WORDY = st.lists(
    st.one_of(
        st.sampled_from([*redaction._DOC_WORDS, "allow_", "_names", '"', ":", "=", " ", "\\", "'", "-----"]),
        st.text(alphabet='abcdefghijklmnopqrstuvwxyz_-:"= \\', max_size=40),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=600, deadline=None)
@given(text=_WORDY)
def test_windowed_document_check_equals_the_whole_text_regex(text: str) -> None:
    assert redaction._doc_triggered(text) == (redaction._DOC_TRIGGER_RE.search(text) is not None)


def test_a_document_trigger_match_holds_a_double_quote_only_at_its_end() -> None:
    """`_pieces_triggered` checks the text's pieces between double quotes, each followed by one:
    sound only while a quote can only be a match's last character (the key words' final class)."""
    pattern = redaction._DOC_TRIGGER_RE.pattern
    before, _, after = pattern.rpartition("[\\\"'\\\\ :=]")
    assert before and '"' not in before and after == ""


@settings(max_examples=600, deadline=None)
@given(texts=st.lists(_WORDY, min_size=1, max_size=4))
def test_the_pieces_check_never_misses_a_document_trigger(texts: list[str]) -> None:
    """Whatever the cache of clean pieces holds (filled by the texts checked before), a text the
    whole-text check flags is flagged by the pieces check too."""
    for text in texts:
        if redaction._doc_triggered(text.lower()):
            assert redaction._pieces_triggered(text)
        # The pieces it has found clean are clean in any text (each piece followed by its quote).
        for piece in text.split('"'):
            if piece in redaction._CLEAN_PIECES:
                assert redaction._DOC_TRIGGER_RE.search(piece.lower() + '"') is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(_JSON, min_size=1, max_size=5), secret=st.one_of(_SECRET, st.just('with"quote-1')))
def test_one_check_of_joined_documents_answers_for_each(docs: list[object], secret: str) -> None:
    """Audit checks a change's documents together: clean together means each is clean alone."""
    import orjson

    r = Redactor([KNOWN], named={"S": secret})
    texts = [orjson.dumps(doc).decode() for doc in docs]
    if r.json_text_clean("\x1e".join(texts)):
        assert all(r.json_text_clean(text) for text in texts)
        assert all(r.redact_json_text(doc, text) is doc for doc, text in zip(docs, texts, strict=True))
