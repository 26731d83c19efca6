"""The response fields a request sees, against h2's own inbound normalisation (off in the
connection's configuration)."""

from __future__ import annotations

import h2.utilities
import pytest

from patient_sidekiq.http.http2_connection import _CONFIG, response_fields


@pytest.mark.parametrize(
    "fields",
    [
        [(b":status", b"200"), (b"server", b"t"), (b"content-length", b"5")],
        [(b":status", b"204"), (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")],
        [(b":status", b"404"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
    ],
)
def test_fields_come_out_as_h2_normalised_them(fields: list[tuple[bytes, bytes]]) -> None:
    assert not _CONFIG.normalize_inbound_headers
    normalised = list(h2.utilities.normalize_inbound_headers(fields, None))  # type: ignore[arg-type]
    status = int(normalised[0][1])
    assert response_fields(fields) == (status, normalised[1:])
