"""Templates: the grammar, rendering, and the fast measure agreeing with `message.encode`."""

from __future__ import annotations

import io
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulksms.api import contacts
from bulksms.api.errors import ApiError
from bulksms.api.submission import batching
from bulksms.message import GSM_BASIC, GSM_EXTENSION, encode
from bulksms.store import records
from bulksms.template import TemplateError, escape, measure, parse, plain, plain_segments


def render(source: str, **values: str) -> str:
    template = parse(source)
    return template.render([values[name] for name in template.fields])


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("Hi {{name}}", {"name": "Ana"}, "Hi Ana"),
        ("Hi {{ Name\t}}!", {"name": "Ana"}, "Hi Ana!"),
        ("{{a}}{{A}}{{b}}", {"a": "x", "b": "y"}, "xxy"),
        ("{{{{literal}} {{x}}", {"x": "1"}, "{{literal}} 1"),
        ("{single} }} {{x}} {", {"x": "v"}, "{single} }} v {"),
        ("Hi {{name}}", {"name": "{{code}} {0} {}"}, "Hi {{code}} {0} {}"),  # never evaluated
        ("Olá {{nome}} 😀", {"nome": "Zoë"}, "Olá Zoë 😀"),
        ("{{prénom}}", {"prénom": "Élodie"}, "Élodie"),
        ("no placeholders {{{{ at all", {}, "no placeholders {{ at all"),
    ],
)
def test_rendering(source: str, values: dict[str, str], expected: str) -> None:
    assert render(source, **values) == expected


@pytest.mark.parametrize(
    ("source", "position"),
    [("{{}}", 0), ("Hi {{", 3), ("Hi {{ first name }}", 3), ("{{{x}}}", 0), ("a {{b-c}}", 2)],
)
def test_a_brace_that_is_not_a_placeholder_is_refused_at_its_place(
    source: str, position: int
) -> None:
    with pytest.raises(TemplateError) as raised:
        parse(source)
    assert raised.value.position == position
    assert f"character {position + 1}" in str(raised.value)


def test_fields_are_named_once_casefolded_in_order_of_first_use() -> None:
    assert parse("{{B}} {{a}} {{b}}").fields == ("b", "a")
    assert not parse("plain {{{{ text").personal


GSM_TEXT = st.text(alphabet=sorted(GSM_BASIC | GSM_EXTENSION), max_size=400)
ANY_TEXT = st.text(max_size=400)


@given(st.one_of(GSM_TEXT, ANY_TEXT, st.text(alphabet="ab{}[]^€`\n😀é", max_size=400)))
def test_measure_agrees_with_encode(text: str) -> None:
    assert measure(text) == encode(text)


@given(st.text(max_size=80), st.lists(st.text(max_size=30), min_size=1, max_size=4))
def test_a_template_renders_its_values_as_written(literal: str, values: list[str]) -> None:
    """Any text escaped, then placeholders between its pieces: the rendering is the literal
    text with each value in place, whatever braces either holds."""
    pieces = [escape(literal)] + [f"{{{{f{i}}}}}" for i in range(len(values))]
    source = "".join(pieces)
    try:
        template = parse(source)
    except TemplateError:
        # Only where escaping cannot help: a lone "{{" at the end joined to a placeholder's.
        assert re.search(r"\{+$", literal)
        return
    assert template.render(values) == literal + "".join(values)


@given(st.lists(st.sampled_from("abcdef"), max_size=60), st.integers(1, 7))
def test_batching_keeps_every_recipient_once_and_a_batch_to_one_text_or_to_lone_ones(
    texts: list[str], size: int
) -> None:
    order, starts = batching(texts, size)
    placed = order or list(range(len(texts)))
    assert sorted(placed) == list(range(len(texts)))
    counts = {t: texts.count(t) for t in texts}
    bounds = [*starts, len(placed)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        batch = [texts[i] for i in placed[start:end]]
        assert 0 < len(batch) <= size
        assert len(set(batch)) == 1 or all(counts[t] == 1 for t in batch)


def test_fields_pack_in_stored_order_and_unpack() -> None:
    numbers = ["+14155550199", "+12015550100", "+13105550100"]
    values = [("c", "3"), ("a", "1"), ("b", "2")]
    order = records.sorted_order(numbers)
    packed = records.pack_fields([values[i] for i in order])
    assert records.unpack_fields(packed, 2) == [("a", "1"), ("b", "2"), ("c", "3")]
    assert records.numbers_of(records.pack_new(numbers)) == [numbers[i] for i in order]


def read(data: bytes, wanted: tuple[str, ...] = ("name",), **options: str) -> contacts.Rows:
    return contacts.read_csv(io.BytesIO(data), wanted, options.get("phone_column"), 100)


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_what_spreadsheets_export_is_read(delimiter: str, bom: bytes, newline: str) -> None:
    d = delimiter
    text = newline.join(
        [
            f"Phone{d}Name{d}Note",
            f'+14155550100{d}"Ana{d} ""A"""{d}"a{newline}b"',
            f"+1 415 555 0101{d}{d}",
            "",
        ]
    )
    rows = read(bom + text.encode())
    assert rows.numbers == ["+14155550100", "+1 415 555 0101"]
    assert rows.values == [(f'Ana{d} "A"',), ("",)]  # (a blank cell: missing, later)
    assert rows.labels == [2, 3]


def test_phone_column_names_and_the_chosen_one() -> None:
    for name in ("PHONE", "phone_number", "Mobile", "to", "Number", "Phone Number"):
        assert read(f"{name},name\n+14155550100,A\n".encode()).numbers == ["+14155550100"]
    chosen = read(b"phone,cell,name\nx,+14155550100,A\n", phone_column="Cell")
    assert chosen.numbers == ["+14155550100"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"phone,name\n+14155550100,Jos\xe9\n", "not_utf8"),
        (b"", "no_header"),
        (b"name\nAna\n", "no_phone_column"),
        (b"phone,Name,NAME\n+1,a,b\n", "duplicate_columns"),
        (b"phone,name\n+14155550100,a\x00b\n", "invalid_csv"),
        (b"phone,name\n", "no_recipients"),
    ],
)
def test_an_unreadable_file_is_refused_naming_the_problem(data: bytes, code: str) -> None:
    with pytest.raises(ApiError) as raised:
        read(data)
    assert (raised.value.status, raised.value.code) == (422, code)


def test_more_rows_than_allowed_is_a_413() -> None:
    data = b"phone\n" + b"+14155550100\n" * 101
    with pytest.raises(ApiError) as raised:
        read(data, ())
    assert raised.value.status == 413


@pytest.mark.parametrize(
    "entry",
    [
        {"to": 5},
        {"to": "+14155550100", "extra": 1},
        {"to": "+14155550100", "fields": []},
        {"to": "+14155550100", "fields": {"a": True}},
        {"to": "+14155550100", "fields": {"a": [1]}},
        {"to": "+14155550100", "fields": {"a": "x\x00"}},
        {"to": "+14155550100", "fields": {"a": "\ud800"}},
        {"to": "+14155550100", "fields": {"a": "1", "A": "2"}},
    ],
)
def test_a_malformed_recipient_object_is_a_400_naming_its_place(entry: object) -> None:
    with pytest.raises(ApiError) as raised:
        contacts.from_json(["+14155550101", entry], ("a",))
    assert (raised.value.status, raised.value.code) == (400, "invalid_recipient")
    assert raised.value.details["index"] == 1


def test_json_values_numbers_and_missing() -> None:
    rows = contacts.from_json(
        [{"to": "+1", "fields": {"A": 3, "b": 1.5}}, {"to": "+2", "fields": {"a": "", "b": None}}],
        ("a", "b"),
    )
    assert rows.values == [("3", "1.5"), (None, None)]


@given(st.text(max_size=40), st.integers(0, 1700))
def test_plain_texts_measure_by_their_length(text: str, length: int) -> None:
    if plain([text]):
        assert measure(text) == encode(text)
        assert encode(text).encoding == "GSM-7" and encode(text).length == len(text)
    wide = "a" * length
    assert plain([wide]) and plain_segments(length) == encode(wide).segments


def test_blank_rows_are_skipped_and_a_nul_is_refused_with_its_row() -> None:
    rows = read(b"phone,name\n+14155550100,A\n,\n\n , \n+14155550101,B\n")
    assert rows.numbers == ["+14155550100", "+14155550101"] and rows.labels == [2, 6]
    with pytest.raises(ApiError) as raised:
        read(b"phone,name\n+14155550100,A\n+14155550101,a\x00b\n")
    assert raised.value.details["row"] == 3


@pytest.mark.parametrize(
    "data",
    [
        b'phone,name\n+14155550100,"Ann\n+14155550101,Bob\n',  # an unclosed quote
        b"phone,name,day\n+14155550100,Smith, John,Monday\n",  # an unquoted separator
    ],
)
def test_a_row_that_would_shift_or_swallow_others_is_refused(data: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        read(data, ("name",))
    assert (raised.value.code, raised.value.details["row"]) == ("invalid_csv", 2)


def test_trailing_empty_cells_are_fine_and_a_wide_header_is_cheap() -> None:
    assert read(b"phone,name\n+14155550100,Ann,,\n").values == [("Ann",)]
    wide = ",".join(["phone", "name", *(f"c{i}" for i in range(40_000))]).encode()
    started = time.perf_counter()
    rows = read(wide + b"\n" + b"+14155550100,Ann\n" * 50)
    assert len(rows.numbers) == 50
    # Not a timing claim, a complexity one: quadratic code took tens of seconds here.
    assert time.perf_counter() - started < 20


def test_a_row_too_long_is_refused_before_it_is_read_whole() -> None:
    """A row of a hundred million empty cells took a web worker to 1.8 GB (the csv reader builds
    a whole row): past MAX_ROW_CHARACTERS a row is refused, the header or one whose quoted cells
    span many short lines alike, with the file read little further than the limit."""
    limit = contacts.MAX_ROW_CHARACTERS
    just = b"+14155550100,Ann" + b"," * (limit - 17) + b"\n"  # (exactly the limit)
    assert read(b"phone,name\n" + just * 2).numbers == ["+14155550100"] * 2
    spanning = b"+14155550101," + b",".join([b'"a\nb"'] * (limit // 6 + 1)) + b"\n"
    for data, row in [
        (b"phone,name" + b"," * limit + b"\n", 1),
        (b"phone,name\n" + just + b"+14155550100,Ann" + b"," * (limit - 16) + b"\n", 3),
        (b"phone,name\n" + just + spanning, 3),
    ]:
        upload = io.BytesIO(data + b"+14155550102,Bo\n" * 1_000_000)
        with pytest.raises(ApiError) as raised:
            contacts.read_csv(upload, ("name",), None, 100)
        assert (raised.value.code, raised.value.details["row"]) == ("invalid_csv", row)
        assert upload.tell() < len(data) + 65536


def test_many_distinct_placeholders_parse_in_linear_time() -> None:
    source = " ".join(f"{{{{f{i}}}}}" for i in range(40_000))
    started = time.perf_counter()
    assert len(parse(source).fields) == 40_000
    assert time.perf_counter() - started < 20  # (quadratic: about 30 s)
