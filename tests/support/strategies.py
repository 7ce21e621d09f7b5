"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def storable_text(**kwargs: Any) -> st.SearchStrategy[str]:
    """Any text the task contract accepts: what `st.text()` draws (UTF-8 encodable, so no lone
    surrogates) except NUL (U+0000), which PostgreSQL cannot store and the contract refuses (its
    own tests cover that refusal)."""
    return st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), **kwargs)
