"""The API's request bodies, one pydantic model each: the single statement of their fields.

A model says what a body may hold (its fields, their types, enums and ranges, nothing else), and
from it come the validation (`bulksms.api.submission`), the OpenAPI document's
`components.schemas` (`bulksms.api.openapi`) and the options of `bulksms send`
(`bulksms.cli.main`). A new field is declared here, once, with its description.

Each field also carries its `Refusal`s: the answer the API has always given when that field
breaks the schema (400 `invalid_field` for a wrong type, 422 with a code of its own for a range or
an enum), so moving the checks into a schema changed no answer.

What a schema cannot say stays custom code beside it: the numbers (`numbers.sort_out`), the
segments (`message.encode`), and the checks that read the service's settings or the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

EXPIRY_RANGE = (5, 10_799)  # Plivo's message_expiry, in seconds
RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal"})  # pydantic's error types

Priority = Literal["normal", "high"]


@dataclass(frozen=True)
class Refusal:
    """How the API answers a field that breaks its schema: `status`, `code` and `message`, with
    details `{"field": name, **details}`. It answers the pydantic error types in `on`, or any
    error of its field when `on` is empty."""

    message: str
    status: int = 400
    code: str = "invalid_field"
    on: frozenset[str] = frozenset()
    details: Mapping[str, Any] = field(default_factory=dict)


def refusal(model: type[BaseModel], name: str, error_type: str) -> Refusal:
    """The refusal that field `name` of `model` declares for a pydantic error of `error_type`."""
    declared = [m for m in model.model_fields[name].metadata if isinstance(m, Refusal)]
    return next((r for r in declared if error_type in r.on), None) or next(
        r for r in declared if not r.on
    )


def _text(value: Any) -> str:
    # A str as it is. Pydantic's str check also refuses a lone surrogate ("\ud800" is valid JSON),
    # which this API has always judged by its content (a 422 of the field's own), not its type.
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a string")
    return value


def _phone_numbers(value: Any) -> list[str | dict[str, Any]]:
    # The list as it is, its items' types judged by one set of the types seen: it may hold a
    # million numbers, which pydantic's list[str] validates and copies one by one (slower), and
    # answers a million wrong items with a million errors (seconds). An object's own fields are
    # judged with the template that reads them (`contacts.from_json`).
    if not isinstance(value, list) or not set(map(type, value)) <= {str, dict}:
        raise PydanticCustomError("list_of_strings", "Input should be a list of strings")
    if not value:
        raise PydanticCustomError("too_short", "The list should not be empty")
    return value


class Recipient(BaseModel):
    """A recipient with the values its message's placeholders take."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="The phone number, as a plain entry of the list.")
    fields: dict[str, str | int | float | None] = Field(
        default_factory=dict,
        description="Values by name (case-insensitive) for the message's {{placeholders}}; "
        "null or an empty string is a missing value.",
    )


Text = Annotated[str, PlainValidator(_text, json_schema_input_type=str)]
PhoneNumbers = Annotated[
    list[str | dict[str, Any]],
    PlainValidator(
        _phone_numbers,
        json_schema_input_type=Annotated[list[str | Recipient], Field(min_length=1)],
    ),
]


def _documented(**schema: Any) -> WithJsonSchema:
    """A string's JSON Schema with a format or pattern that documents what the custom checks in
    `bulksms.api.submission` accept (they answer in their own words, after the numbers)."""
    return WithJsonSchema({"type": "string", **schema})


class SubmitFields(BaseModel):
    """What every submit body holds but its recipients."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    message: Annotated[
        Annotated[Text, _documented(minLength=1)], Refusal("message must be a string.")
    ] = Field(
        description="The text: at most 1600 GSM-7 or 737 UCS-2 characters once filled. "
        "{{name}} is filled from each recipient's field `name` (case-insensitive); {{{{ "
        "writes a literal {{."
    )
    sender: Annotated[Text | None, Refusal("sender must be a string.")] = Field(
        None,
        description="Plivo's src: an E.164 number or an alphanumeric sender ID (1-11 "
        "characters, a letter among them). Default: the service's PLIVO_SENDER_ID.",
    )
    powerpack_uuid: Annotated[
        Annotated[Text, _documented(format="uuid")] | None,
        Refusal("powerpack_uuid must be a string."),
    ] = Field(None, description="A Plivo Powerpack to send through instead of a sender.")
    default_region: Annotated[
        Annotated[Text, _documented(pattern="^[A-Za-z]{2}$")] | None,
        Refusal("default_region must be a string."),
    ] = Field(
        None,
        description="Region of the numbers in national format, e.g. US: a region "
        "phonenumbers knows.",
    )
    callback_url: Annotated[
        Annotated[Text, _documented(format="uri")] | None,
        Refusal("callback_url must be a string."),
    ] = Field(None, description="POSTed the job's final status, signed (X-Bulksms-Signature).")
    priority: Annotated[
        Priority,
        Refusal('priority must be "normal" or "high".', 422, "invalid_priority"),
    ] = Field("normal", description="high (or a small job) goes first.")
    max_segments: Annotated[
        int | None,
        Field(ge=1),
        Refusal("max_segments must be a whole number of at least 1."),
    ] = Field(None, description="Refuse the job if it would bill more segments (422).")
    send_at: Annotated[
        Annotated[Text, _documented(format="date-time")] | None,
        Refusal("send_at must be an ISO 8601 time string."),
    ] = Field(None, description="Send later: ISO 8601 with a zone, at most 30 days ahead.")
    expiry_seconds: Annotated[
        int | None,
        Field(ge=EXPIRY_RANGE[0], le=EXPIRY_RANGE[1]),
        Refusal("expiry_seconds must be a whole number."),
        Refusal(
            f"expiry_seconds must be between {EXPIRY_RANGE[0]} and {EXPIRY_RANGE[1]}.",
            422,
            "invalid_expiry",
            on=RANGE_ERRORS,
            details={"min": EXPIRY_RANGE[0], "max": EXPIRY_RANGE[1]},
        ),
    ] = Field(None, description="Passed to Plivo as message_expiry: an unsent message expires.")


class SubmitRequest(SubmitFields):
    """`POST /api/bulk-sms` as JSON: one message, or one template, for a list of recipients."""

    recipients: Annotated[
        PhoneNumbers,
        Refusal("recipients must be a list of phone numbers (strings) or recipient objects."),
        Refusal("recipients must not be empty.", 422, "no_recipients", on=frozenset({"too_short"})),
    ] = Field(
        description="Phone numbers: E.164, or national format with default_region (spaces, "
        "dashes, dots and brackets are fine); or objects with the fields a template needs."
    )


class SubmitForm(SubmitFields):
    """`POST /api/bulk-sms` as multipart/form-data: a contact file (the part `recipients`,
    CSV) and the other fields as form fields."""

    phone_column: Annotated[Text | None, Refusal("phone_column must be a string.")] = Field(
        None,
        description="The CSV column holding the numbers. Default: the first of phone, "
        "phone_number, mobile, to, number (case-insensitive).",
    )


REQUEST_BODIES: tuple[type[BaseModel], ...] = (SubmitRequest, SubmitForm)
# The form's whole numbers, read from text (a form field is a string).
FORM_INTEGERS = frozenset({"max_segments", "expiry_seconds"})
