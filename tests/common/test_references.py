"""References: parsing download URIs and normalising server URLs."""

import pytest

from livefile.impl_common.references import parse_reference, reference_or_id, ws_base_url

RID = "0123456789abcdef0123456789abcdef"


def test_ws_reference_is_split_into_base_and_id() -> None:
    parsed = parse_reference(f"ws://h:1/ws/streaming/download/{RID}")
    assert (parsed.ws_base, parsed.resource_id, parsed.http_base) == ("ws://h:1", RID, "http://h:1")


def test_http_resource_url_is_accepted() -> None:
    parsed = parse_reference(f"https://h/prefix/resources/{RID}/content")
    assert parsed.download_uri == f"wss://h/prefix/ws/streaming/download/{RID}"


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://h/x",
        "ws://h/ws/streaming/download/..",
        "ws://h/other",
        "nonsense",
        "ws://h/ws/streaming/download/%2e%2e%2f",
    ],
)
def test_non_references_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="Not a livefile"):
        parse_reference(bad)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:8080", "ws://127.0.0.1:8080"),
        ("http://h:1/", "ws://h:1"),
        ("https://h", "wss://h"),
        ("ws://h", "ws://h"),
    ],
)
def test_server_urls_are_normalised(given: str, expected: str) -> None:
    assert ws_base_url(given) == expected


def test_a_reference_tells_the_token_it_carries() -> None:
    with_token = parse_reference(f"ws://h:1/ws/streaming/download/{'a' * 32}?token=x.y.z")
    assert with_token.token == "x.y.z"
    assert parse_reference(f"ws://h:1/ws/streaming/download/{'a' * 32}").token is None


def test_a_bare_id_becomes_a_reference_on_the_given_server() -> None:
    assert reference_or_id("a" * 32, "http://h:1") == f"ws://h:1/ws/streaming/download/{'a' * 32}"
    reference = f"wss://h/ws/streaming/download/{'b' * 32}"
    assert reference_or_id(reference, "http://other:1") == reference
