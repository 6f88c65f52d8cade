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
