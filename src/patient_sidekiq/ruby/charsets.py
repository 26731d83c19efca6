"""Ruby's view of a body's character set, for the gem's payload encoding rules (wire spec §2.1).

The gem labels every text body with a Ruby encoding name (``"UTF-8"``, ``"ASCII-8BIT"`` …)
and decides text versus binary from the content-type with Ruby regular expressions. This
module reproduces those decisions and maps Ruby's encoding names onto Python codecs.
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache
from typing import Final

from patient_sidekiq.ruby.ruby_encodings_data import RUBY_DUMMY_ENCODINGS, RUBY_ENCODING_NAMES

__all__ = [
    "BINARY",
    "UTF_8",
    "charset_of",
    "is_text_mimetype",
    "python_codec",
    "ruby_encoding_name",
]

BINARY: Final = "ASCII-8BIT"
UTF_8: Final = "UTF-8"

# Same patterns as the gem: case-sensitive, and only the first "charset=" token counts.
# A quoted charset (charset="utf-8") does not match, so Ruby treats it as binary; so do we.
_TEXT_MIMETYPE = re.compile(r"\Atext/|application/(?:json|xml|javascript)")
_CHARSET = re.compile(r"charset=([A-Za-z0-9_-]+)")

# Ruby encodings whose Python codec has another name. Encodings with no faithful Python
# codec (vendor Shift_JIS variants, EUC-TW, CESU-8 …) are left out on purpose: guessing
# would write different text than Ruby does.
_PYTHON_CODEC_OVERRIDES: Final = {
    "Windows-31J": "cp932",
    "Windows-874": "cp874",
    "IBM720": "cp720",
    "IBM737": "cp737",
    "macCentEuro": "mac_latin2",
    "macCroatian": "mac_croatian",
    "macRomania": "mac_romanian",
    "UTF8-MAC": "utf-8",
}


_TRANSCODED_DUMMIES: Final = frozenset({"ISO-2022-JP", "ISO-2022-JP-2", "IBM037"})


def is_text_mimetype(content_type: str | None) -> bool:
    """Return whether the gem stores a body of this content-type as text (else binary)."""
    return content_type is not None and _TEXT_MIMETYPE.search(content_type) is not None


def ruby_encoding_name(name: str) -> str | None:
    """Return Ruby's canonical name for an encoding name or alias, or None if Ruby has none."""
    return RUBY_ENCODING_NAMES.get(name.lower())


def charset_of(content_type: str | None) -> str:
    """Return the Ruby encoding the gem applies to a body of this content-type.

    ``ASCII-8BIT`` when there is no content-type, no ``charset=`` or an unknown charset.
    """
    if content_type is None:
        return BINARY
    match = _CHARSET.search(content_type)
    if match is None:
        return BINARY
    return ruby_encoding_name(match.group(1)) or BINARY


@lru_cache(maxsize=256)
def python_codec(ruby_name: str) -> str | None:
    """Return the Python codec that decodes text in this Ruby encoding, or None.

    ``ASCII-8BIT`` has none. Ruby's dummy encodings (UTF-16 without byte order, UTF-7 …)
    have none either, except ISO-2022-JP and IBM037, which Ruby does transcode.
    """
    if ruby_name == BINARY:
        return None
    if ruby_name in RUBY_DUMMY_ENCODINGS and ruby_name not in _TRANSCODED_DUMMIES:
        return None
    name = _PYTHON_CODEC_OVERRIDES.get(ruby_name, ruby_name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None
