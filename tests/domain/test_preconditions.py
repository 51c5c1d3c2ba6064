from __future__ import annotations

from datetime import UTC, datetime

from tfstorage.domain.preconditions import modified_after

WRITTEN = datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)


def test_if_unmodified_since_fails_only_on_a_real_earlier_date() -> None:
    assert modified_after("Sun, 01 Mar 2026 11:59:59 GMT", WRITTEN)
    assert not modified_after("Sun, 01 Mar 2026 12:00:00 GMT", WRITTEN)  # 1 s resolution
    # Not a date, or one without a zone: ignored, never a failed condition (RFC 9110).
    for header in ("soon", "", "Sun, 01 Mar 2026 11:00:00", "2026-03-01"):
        assert not modified_after(header, WRITTEN), header
