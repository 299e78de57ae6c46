"""The CLI's own parsing, without a service to talk to."""

from __future__ import annotations

from bulksms.cli.client import read_numbers


def test_numbers_from_text_and_csv_files() -> None:
    assert read_numbers("+14155550100\n\n# note\n(415) 555-0101\n") == [
        "+14155550100",
        "(415) 555-0101",
    ]
    assert read_numbers("name,phone\nAda,+14155550100\nBob,+14155550101\n") == [
        "+14155550100",
        "+14155550101",
    ]
    assert read_numbers("+14155550100,Ada\n+14155550101,Bob\n") == ["+14155550100", "+14155550101"]
    assert read_numbers("Name;Mobile\nAda;+14155550100\n") == ["+14155550100"]
    assert read_numbers("contact,note\n+14155550100,x\n") == ["+14155550100"]
