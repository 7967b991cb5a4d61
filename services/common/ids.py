"""Names a client sends, validated the same way by every stage that takes them: session ids (the orchestrator,
NLP, recommender) and voice names (the orchestrator, TTS)."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgumentError, shown

SESSION_ID_RULE = "1..128 of letters, digits, '-', '_', '.', ':'"
_SESSION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def validate_session_id(value: str, *, required: bool = False, field: str = "session_id") -> str:
    """``value`` if well-formed (or empty and not ``required``); ``InvalidArgumentError`` naming it otherwise."""
    if not value:
        if required:
            raise InvalidArgumentError(f"{field} is required: {SESSION_ID_RULE}")
        return ""
    if not _SESSION_ID.fullmatch(value):
        raise InvalidArgumentError(f"{field}={shown(value)} is invalid: use {SESSION_ID_RULE}")
    return value


VOICE_NAME_MAX_CHARS = 64


def validate_voice_name(value: str, *, field: str = "voice") -> str:
    """``value`` unless it is longer than any voice name can be (then ``InvalidArgumentError``); whether such a
    voice exists is the TTS stage's to say (NOT_FOUND)."""
    if len(value) > VOICE_NAME_MAX_CHARS:
        raise InvalidArgumentError(f"{field} has {len(value)} characters, more than the limit of {VOICE_NAME_MAX_CHARS}")
    return value
