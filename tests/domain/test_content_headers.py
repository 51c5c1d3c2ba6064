import pytest

from tfstorage.domain.content_headers import stored_content_headers
from tfstorage.errors import InvalidArgument


def _read(headers: dict[str, str]) -> dict[str, str]:
    return stored_content_headers(lambda name: headers.get(name))


def test_kept_headers_and_the_transport_encoding_dropped() -> None:
    got = _read(
        {
            "cache-control": " max-age=60 ",
            "content-encoding": "gzip, aws-chunked",
            "content-language": "",
            "x-other": "ignored",
        }
    )
    assert got == {"Cache-Control": "max-age=60", "Content-Encoding": "gzip"}
    assert _read({"content-encoding": "aws-chunked"}) == {}


@pytest.mark.parametrize("value", ["a\x01b", "x" * 1025])
def test_a_value_that_cannot_come_back_as_sent_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="Cache-Control"):
        _read({"cache-control": value})
    assert _read({"cache-control": "x" * 1024}) == {"Cache-Control": "x" * 1024}
