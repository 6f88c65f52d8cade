"""check_endpoint_url: the one validator every plugin's endpoint field uses."""

import pytest

from destinations import InvalidDestination
from destinations.plugin import check_endpoint_url

EX = "https://example.com"


@pytest.mark.parametrize(
    ("value", "path", "expected"),
    [
        (" https://s3.example.com/ ", False, "https://s3.example.com"),
        ("https://s3.example.com:8443", False, "https://s3.example.com:8443"),
        (
            "http://127.0.0.1:10000/devstoreaccount1/",
            True,
            "http://127.0.0.1:10000/devstoreaccount1",
        ),
        ("https://[::1]:9000", False, "https://[::1]:9000"),
    ],
)
def test_accepted_and_normalised(value: str, path: bool, expected: str) -> None:
    assert check_endpoint_url("x_endpoint", value, example=EX, path=path) == expected


@pytest.mark.parametrize(
    ("value", "path", "fragment"),
    [
        ("", False, "required"),
        ("s3.example.com", False, "https://"),
        ("ftp://s3.example.com", False, "https://"),
        ("https://user:hunter2@s3.example.com", False, "no user name or password"),
        ("https://acct.example.com/?sv=1&sig=SECRETSIG", True, "SAS token"),
        ("https://s3.example.com:99999", False, "invalid port"),
        ("https://s3.example.com:0", False, "invalid port"),
        ("https://bad_host!", False, "host name"),
        ("https://s3.example.com/acct", False, "no path"),
    ],
)
def test_rejected_naming_the_field_not_the_value(value: str, path: bool, fragment: str) -> None:
    with pytest.raises(InvalidDestination) as info:
        check_endpoint_url("x_endpoint", value, example=EX, path=path)
    message = info.value.errors["x_endpoint"]
    assert fragment in message
    assert "hunter2" not in message and "SECRETSIG" not in message


def test_endpoint_url_rules_pinned() -> None:
    """What check_endpoint_url returns and refuses, exactly (mutation testing found these
    unpinned)."""

    def check(value: str, path: bool = False) -> str:
        return check_endpoint_url("f", value, example="https://host[:port]", path=path)

    # paths are refused unless asked for (the default)
    with pytest.raises(InvalidDestination, match="no path"):
        check_endpoint_url("f", "https://h.example/x", example=EX)
    assert check("https://h.example/x/", path=True) == "https://h.example/x"
    # only "/" is stripped from the end, nothing else
    assert check("https://s3.EXAMPLEX/") == "https://s3.EXAMPLEX"
    # an empty value is "required", said just so
    with pytest.raises(InvalidDestination) as info:
        check("  /  ")
    assert info.value.errors == {"f": "required"}
    # without a path the answer is scheme://netloc, even when the text had an empty query
    assert check("https://h.example?") == "https://h.example"
    assert check("https://h.example#") == "https://h.example"
