"""`/api/bulk-sms`: submit a job, read its status. Every endpoint needs an API key."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
from collections.abc import Callable, Sequence
from typing import IO, Any

import redis
from flask import Blueprint, Response, jsonify, request, stream_with_context

from bulksms import ids, metrics, taskqueue
from bulksms.api import idempotency, submission
from bulksms.api import recipients as recipients_report
from bulksms.api.auth import require_api_key, scope
from bulksms.api.errors import ApiError
from bulksms.api.ratelimit import limiter, read_limit, submit_limit
from bulksms.config import Settings
from bulksms.documents import duration, progress, status_document
from bulksms.extensions import celery, pace, redis_client, settings, store
from bulksms.store import (
    FINISHED,
    Guard,
    Job,
    JobState,
    JobStore,
    KeyAnswered,
    NewJob,
    Status,
    Window,
    sender_of,
)
from bulksms.store import optouts as suppression
from bulksms.template import escape

bp = Blueprint("api", __name__, url_prefix="/api/bulk-sms")
# Body limits of a submit, by content type (a million recipients and some room): JSON objects
# with a field or two take about 70 bytes each; a CSV row with two fields about 36.
JSON_BYTES_PER_RECIPIENT = 80
CSV_BYTES_PER_RECIPIENT = 128
log = logging.getLogger(__name__)


@bp.before_request
def _authenticate() -> None:
    require_api_key(settings().api_keys)


@bp.post("")
@limiter.limit(submit_limit)
def submit() -> tuple[Response, int, dict[str, str]]:
    """A JSON body, or multipart/form-data with a contact file (CSV)."""
    body, upload, digest = _submit_body()
    return _created(digest, lambda slot: make_job(body, slot, upload=upload))


@bp.post("/preview")
@limiter.limit(submit_limit)
def preview() -> Response:
    """What a submit of this body would answer, and its first messages: nothing is stored."""
    body, upload, _ = _submit_body()
    sub = read(body, upload)
    return jsonify(submission.preview_document(sub, settings()))


def status_url(job_id: str) -> str:
    return f"{bp.url_prefix}/{job_id}"


def _submit_body() -> tuple[Any, IO[bytes] | None, Any]:
    """The body's fields, its contact file (multipart only) and what identifies the request
    for `Idempotency-Key`. Limits by content type: a contact file may be bigger than JSON."""
    s = settings()
    kind = (request.mimetype or "").lower()
    if kind != "multipart/form-data":
        request.max_content_length = s.max_recipients * JSON_BYTES_PER_RECIPIENT + 65536
        raw = request.get_data(cache=False)
        body = submission.parse_json(raw, request.content_type, s.max_recipients)
        return body, None, body
    request.max_content_length = s.max_recipients * CSV_BYTES_PER_RECIPIENT + 1048576
    files, form = request.files, request.form
    repeated = sorted({*(n for n in form if len(form.getlist(n)) > 1), *_repeated(files)})
    if repeated or ("recipients" in files and "recipients" in form):
        names = repeated or ["recipients"]
        raise ApiError(
            400,
            "duplicate_field",
            f"Each field may be given once: {', '.join(names)[:200]}.",
            details={"fields": names[:20]},
        )
    garbled = sorted(name for name, value in form.items() if "\ufffd" in value)
    if garbled:  # (Werkzeug reads a form field that is not UTF-8 with replacement characters)
        raise ApiError(
            400,
            "not_utf8",
            f"Form field(s) not UTF-8 text: {', '.join(garbled)[:200]}.",
            details={"fields": garbled[:20]},
        )
    unexpected = sorted(set(files) - {"recipients"})
    if unexpected:
        raise ApiError(
            400,
            "unknown_field",
            f"Unknown file part(s): {', '.join(unexpected)[:200]}; the contact file is the "
            "part `recipients`.",
            details={"fields": unexpected[:20]},
        )
    upload: IO[bytes]
    if "recipients" in files:
        upload = files["recipients"].stream
    elif "recipients" in form:
        upload = io.BytesIO(form["recipients"].encode("utf-8", "surrogatepass"))
    else:
        raise ApiError(
            400,
            "no_contact_file",
            "A multipart body needs the contact file (CSV) as its part `recipients`.",
            details={"field": "recipients"},
        )
    fields = {name: value for name, value in form.items() if name != "recipients"}
    return submission.form_body(fields), upload, {"form": fields, "csv": file_digest(upload)}


def file_digest(upload: IO[bytes]) -> str:
    """A contact file's digest (what an Idempotency-Key covers), read without holding it."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: upload.read(1 << 20), b""):
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def _repeated(files: Any) -> list[str]:
    return [name for name in files if len(files.getlist(name)) > 1]


def read(body: Any, upload: IO[bytes] | None) -> submission.Submission:
    """Read and check a submit body, opt-outs and templates included (reads Redis only)."""
    s = settings()
    sub = submission.read_submission(body, s, upload)
    return _checked(sub, suppression.suppressed(redis_client(), sub.recipients.accepted), s)


def _checked(sub: submission.Submission, opted_out: set[str], s: Settings) -> submission.Submission:
    """A read submit body with its `opted_out` recipients set aside, its templates filled and
    its spend checked."""
    sub.recipients.suppress(opted_out)
    submission.personalise(sub)
    if not sub.recipients.accepted:
        raise ApiError(
            422,
            "no_valid_recipients",
            "Every valid recipient has opted out."
            if sub.recipients.suppressed and not sub.recipients.invalid_count
            else "No recipient is left to send to.",
            details=submission.accepted_document(sub),
        )
    submission.check_spend(sub, s)
    sub.priority()  # (judged here too: a preview answers what the submit would)
    return sub


def _created(
    body: Any, make: Callable[[idempotency.Slot | None], dict[str, Any]]
) -> tuple[Response, int, dict[str, str]]:
    """Every POST that makes a job: once per `Idempotency-Key` (and `body`), when one is given."""
    answer, replayed = created_once(body, make, request.headers.get(idempotency.HEADER), scope())
    return _accepted(answer, {"Idempotent-Replayed": "true"} if replayed else None)


def created_once(
    body: Any,
    make: Callable[[idempotency.Slot | None], dict[str, Any]],
    idempotency_key: str | None,
    asker: str,
) -> tuple[dict[str, Any], bool]:
    """Make a job once per idempotency key (and `body`), scoped to who asks (`asker`: see
    `auth.scope`); the answer, and whether it is a replay of the first request's."""
    if idempotency_key is None:
        return make(None), False
    with idempotency.once(
        redis_client(), idempotency_key, asker, body, settings().idempotency_ttl
    ) as slot:
        if isinstance(slot, dict):
            _finish_remembered(slot["job_id"])
            return slot, True
        try:
            return make(slot), False
        except KeyAnswered:  # (this request outlived its hold; the one that took it answered)
            answer = slot.answered_by_another()
            _finish_remembered(answer["job_id"])
            return answer, True


def make_job(
    body: Any,
    slot: idempotency.Slot | None,
    retry_of: str | None = None,
    upload: IO[bytes] | None = None,
) -> dict[str, Any]:
    """Validate, then store the job, remember the answer (if idempotent), index the job for
    the sweep and enqueue its first tasks, in one round trip and in that order: the answer is
    remembered before anything can send the job, so a retry of a request that failed half-way
    finds this job (and finishes it: `_finish_remembered`) rather than making a second one."""
    s = settings()
    sub = read(body, upload)
    new_job = _new_job(sub, retry_of, s)
    # (an urgent job waits behind the urgent work accepted before it: its estimate says so;
    # its share is given back if the job is then not kept)
    now = sub.send_at is None
    urgent_now = new_job.urgent and now
    ahead = _take_urgent(sub.total_segments) if urgent_now else 0.0
    answer = _answer(sub, new_job, ahead, s)
    # One round trip: the job, the answer to replay, the index and the job's first tasks (when
    # the broker is this Redis), in that order: the answer is stored before anything can send
    # the job. Should the process die before the tasks are pushed, the sweep enqueues the
    # job's pending batches.
    together = now and s.broker_is_store
    tasks = _first_tasks(new_job) if together else []
    remember = None if slot is None else lambda pipe: slot.remember(answer, pipe)
    try:
        store().create(new_job, remember, tasks, None if slot is None else slot.guard)
    except KeyAnswered:  # (another request made the job: nothing of this one was kept)
        if urgent_now:
            _give_back_urgent(sub.total_segments)
        raise
    except redis.ResponseError:  # (refused: nothing kept. Lost on the way, it may have been)
        if urgent_now:
            _give_back_urgent(sub.total_segments)
        if slot is not None:
            slot.refused()
        raise
    _count(new_job)
    if now and not together:
        _start(new_job.job_id, new_job.batch_count, new_job.urgent)
    return answer


class LimitReached(Exception):
    """`make_alert`: the request is past its `windows[index]` submit limit."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def alert(body: Any, s: Settings) -> tuple[submission.Submission, list[str]] | None:
    """A submit body read for `make_alert` without asking Redis, as if no recipient had opted
    out, and its valid numbers (for `make_alert`'s round trip to look up: if one did opt out,
    the job is made the general way). None for a job `make_alert` does not make: one scheduled
    for later, whose tasks go to a broker other than the store, or refused once its templates
    are filled or its spend checked (an opted-out recipient may be why: the general way
    answers). (`s` and `make_alert`'s objects are handed over, not found through `current_app`:
    an alert is made without an app context, whose push and lookups cost it more than its
    answer's making.)"""
    if not s.broker_is_store:
        return None
    sub = submission.read_submission(body, s)
    valid = list(sub.recipients.accepted)
    try:
        sub = _checked(sub, set(), s)
    except ApiError:
        return None
    return (sub, valid) if sub.send_at is None else None


def make_alert(
    sub: submission.Submission,
    valid: Sequence[str],
    windows: Sequence[Window],
    s: Settings,
    jobs: JobStore,
) -> dict[str, Any] | None:
    """A small job made in one round trip (`JobStore.create_guarded`), checks and all: the
    request counted against its submit limits (`windows`, the limits library's lists; past one,
    `LimitReached`), its `valid` numbers looked up in the opt-out set, its urgent backlog taken
    (beyond the bound, 503), then the job, its index and its tasks written. None if one of
    those numbers opted out: nothing is written, the limits are counted, and `make_job` makes
    the job."""
    new_job = _new_job(sub, None, s)
    urgent_seconds = sub.total_segments / s.plivo_mps if new_job.urgent else None
    guard = Guard(windows, valid, urgent_seconds, s.urgent_backlog_seconds)
    outcome, value = jobs.create_guarded(new_job, guard, _first_tasks(new_job))
    if outcome == "limited":
        raise LimitReached(int(value) - 1)
    if outcome == "opted_out":
        return None
    if outcome == "backlog":
        raise _urgent_backlog(value, s)
    assert outcome == "created", outcome
    _count(new_job)
    return _answer(sub, new_job, value, s)


def _new_job(sub: submission.Submission, retry_of: str | None, s: Settings) -> NewJob:
    accepted = sub.recipients.accepted
    personal = sub.personal
    recipients, fields, starts = accepted, None, None
    segments_per_message = sub.encoded.segments
    if personal is not None:
        order, starts = submission.batching(personal.texts, s.batch_size)
        recipients = [accepted[i] for i in order] if order else accepted
        fields = [personal.values[i] for i in order] if order else personal.values
        # (the mean, for the pace's ETA)
        segments_per_message = -(-sub.total_segments // len(accepted))
    return NewJob(
        job_id=ids.uuid4_hex(),
        sending=sub.sending,
        recipients=recipients,
        received=sub.recipients.received,
        duplicates=sub.recipients.duplicates,
        invalid=sub.recipients.invalid_count,
        suppressed=sub.recipients.suppressed,
        batch_size=s.batch_size,
        encoding=submission.segments_document(sub)["encoding"],
        segments_per_message=segments_per_message,
        urgent=_urgent(sub, len(accepted), s),
        callback_url=sub.callback_url,
        retry_of=retry_of,
        send_at=sub.send_at,
        field_names=sub.template.fields,
        fields=fields,
        starts=starts,
    )


def _answer(
    sub: submission.Submission, new_job: NewJob, ahead: float, s: Settings
) -> dict[str, Any]:
    """The 202's body: `ahead`, the urgent backlog before the job, counts in its estimate."""
    rate = s.pace_for(sender_of(sub.sending))
    return {
        "job_id": new_job.job_id,
        "status_url": status_url(new_job.job_id),
        "state": (JobState.SCHEDULED if sub.send_at else JobState.QUEUED).value,
        "batches": new_job.batch_count,
        **submission.accepted_document(sub),
        "estimated_duration_seconds": round(
            ahead + duration(len(new_job.recipients), new_job.segments_per_message, rate), 3
        ),
        **({"retry_of": new_job.retry_of} if new_job.retry_of else {}),
    }


def _first_tasks(new_job: NewJob) -> list[tuple[str, str]]:
    return taskqueue.start_messages(new_job.job_id, new_job.batch_count, new_job.urgent)


def _count(new_job: NewJob) -> None:
    metrics.JOBS_CREATED.inc()
    metrics.RECIPIENTS_ACCEPTED.inc(len(new_job.recipients))


def _take_urgent(segments: int) -> float:
    """Count an urgent job against the urgent lane's backlog (seconds of the account's pace,
    `store.pacing`): the backlog ahead of it. Beyond `URGENT_BACKLOG_SECONDS` it is refused,
    503 with Retry-After, rather than accepted to arrive late."""
    s = settings()
    taken, seconds = pace().take_urgent(segments / s.plivo_mps, s.urgent_backlog_seconds)
    if not taken:
        raise _urgent_backlog(seconds, s)
    return seconds


def _give_back_urgent(segments: int) -> None:
    """`_take_urgent` undone for a job not kept. Best effort: it only keeps the estimates and
    the bound true (a Redis refusing writes refuses this too), and the caller's error is the
    one to answer with."""
    with contextlib.suppress(redis.RedisError):
        pace().give_back_urgent(segments / settings().plivo_mps)


def _urgent_backlog(seconds: float, s: Settings) -> ApiError:
    """503 for an urgent job `seconds` beyond the urgent backlog's bound."""
    return ApiError(
        503,
        "urgent_backlog",
        f"More than {s.urgent_backlog_seconds:g} s of urgent messages wait to be sent at "
        f"the account's pace ({s.plivo_mps:g} segments a second): try again later.",
        details={"retry_after_seconds": math.ceil(seconds)},
        headers={"Retry-After": str(max(1, math.ceil(seconds)))},
    )


def _start(job_id: str, batches: int, urgent: bool) -> None:
    """Enqueue a stored, indexed job. It is accepted whatever the broker says: should this
    fail, the sweep enqueues its pending batches (a 5xx now would invite a second job)."""
    try:
        taskqueue.start(celery(), job_id, batches, urgent)
    except Exception:
        log.warning("enqueueing job %s failed; the sweep will enqueue it", job_id, exc_info=True)


def _finish_remembered(job_id: str) -> None:
    """A replayed answer's job may never have been indexed (a job of the release before,
    which remembered and indexed apart, whose request died between): index it and set it going
    now."""
    if store().ensure_indexed(job_id):
        job = store().job(job_id)
        if job is not None and job.send_at is None:
            _start(job_id, job.batches, job.urgent)


def document(job: Job) -> dict[str, Any]:
    """The status JSON; while the job is queued or sending, with its progress estimate."""
    if job.state not in (JobState.QUEUED, JobState.SENDING):
        return status_document(job)
    view = pace().view(job.job_id)
    rate = settings().pace_for(sender_of(job.sending))
    return status_document(job, progress(job, rate, view.backlog, view.sharing, view.now))


def _urgent(sub: submission.Submission, accepted: int, s: Settings) -> bool:
    """Small jobs and priority "high" go through the urgent queue."""
    return sub.priority() == "high" or accepted <= s.urgent_max_recipients


def _accepted(
    answer: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[Response, int, dict[str, str]]:
    return jsonify(answer), 202, {"Location": answer["status_url"], **(headers or {})}


@bp.get("/<job_id>")
@limiter.limit(read_limit)
def status(job_id: str) -> Response:
    return jsonify(document(find_job(job_id)))


@bp.post("/<job_id>/cancel")
@limiter.limit(submit_limit)
def cancel(job_id: str) -> Response:
    """Batches not yet handed to Plivo are never sent; one in flight finishes and is counted."""
    return jsonify(document(cancel_job(job_id)))


def cancel_job(job_id: str) -> Job:
    job = find_job(job_id)
    if job.state in (JobState.COMPLETED, JobState.FAILED):
        raise ApiError(
            409, "job_finished", f"The job is {job.state.value}: nothing left to cancel."
        )
    if job.state is JobState.CANCELLED:
        return job  # (its batches' tasks went out with the first cancel; the sweep keeps them)
    store().cancel(job_id)
    store().release(job_id)  # a scheduled job: never to be released now
    # Their tasks may be gone (consumed while paused): each claim now cancels its batch.
    _enqueue_pending(job)
    return find_job(job_id)


@bp.post("/<job_id>/retry")
@limiter.limit(submit_limit)
def retry(job_id: str) -> tuple[Response, int, dict[str, str]]:
    """A new job, linked to this one, for exactly the recipients a retry can help: those that
    failed or went undelivered for a network error or a temporary unavailability."""
    body = _retry_body(job_id)
    # (the key's request is "retry this job": a second one answers the first's retry job)
    return _created({"retry_of": job_id}, lambda slot: make_job(body, slot, retry_of=job_id))


def retry_job(job_id: str, idempotency_key: str | None) -> dict[str, Any]:
    """`retry`, for the campaign page: the retry job's answer."""
    body = _retry_body(job_id)
    return created_once(
        {"retry_of": job_id},
        lambda slot: make_job(body, slot, retry_of=job_id),
        idempotency_key,
        scope(),
    )[0]


def _retry_body(job_id: str) -> dict[str, Any]:
    job = _readable(job_id)
    if job.unsent_batches or job.state not in (JobState.SENT, *FINISHED):
        raise ApiError(
            409, "job_not_finished", f"The job is {job.state.value}: wait for its sends."
        )
    again: list[Any] = [
        {"to": row["number"], "fields": row["fields"]} if "fields" in row else row["number"]
        for row in recipients_report.retryable(store(), job)
    ]
    if not again:
        raise ApiError(422, "nothing_to_retry", "No recipient failed in a way a retry can fix.")
    sending = job.sending
    # A template's job stored its template; any other its text, read again as a template.
    message = sending.message if job.field_names else escape(sending.message)
    body: dict[str, Any] = {"recipients": again, "message": message}
    if sending.src is not None:
        body["sender"] = sending.src
    if sending.powerpack_uuid is not None:
        body["powerpack_uuid"] = sending.powerpack_uuid
    if sending.message_expiry is not None:
        body["expiry_seconds"] = sending.message_expiry
    return body


@bp.post("/<job_id>/pause")
@limiter.limit(submit_limit)
def pause(job_id: str) -> Response:
    """No batch starts while paused; batches in flight finish."""
    return jsonify(document(pause_job(job_id)))


def pause_job(job_id: str) -> Job:
    state = find_job(job_id).state
    if state not in (JobState.QUEUED, JobState.SENDING, JobState.PAUSED):
        raise ApiError(409, "not_pausable", f"The job is {state.value}: no batch is left to pause.")
    store().pause(job_id)
    return find_job(job_id)


@bp.post("/<job_id>/resume")
@limiter.limit(submit_limit)
def resume(job_id: str) -> Response:
    """Continue exactly where the job stopped: the batches still pending, no other."""
    return jsonify(document(resume_job(job_id)))


def resume_job(job_id: str) -> Job:
    job = find_job(job_id)
    # A job paused while its last batches were in flight is paused with none pending: resumed,
    # it goes on (nothing to enqueue). One cancelled since stays cancelled.
    if not job.paused or job.state is JobState.CANCELLED:
        raise ApiError(409, "not_paused", f"The job is {job.state.value}, not paused.")
    store().resume(job_id)
    _enqueue_pending(job)
    return find_job(job_id)


@bp.delete("/<job_id>")
@limiter.limit(submit_limit)
def delete(job_id: str) -> Response:
    """Erase a finished job's per-recipient data; its counts stay."""
    job = find_job(job_id)
    if job.unsent_batches or job.state not in FINISHED:
        raise ApiError(
            409,
            "job_not_finished",
            f"The job is {job.state.value}: cancel it or wait for it to finish.",
        )
    store().erase(job)
    return jsonify(document(find_job(job_id)))


@bp.get("/<job_id>/messages")
@limiter.limit(read_limit)
def messages(job_id: str) -> Response:
    job = _readable(job_id)
    found, after = recipients_report.page(
        store(),
        job,
        _status_filter(),
        _limit(100, 1000),
        recipients_report.Cursor.parse(request.args.get("cursor")),
    )
    return jsonify({"messages": found, "next_cursor": str(after) if after else None})


@bp.get("/<job_id>/errors")
@limiter.limit(read_limit)
def errors(job_id: str) -> Response:
    """The job's recipients with an error, by error code (read from every batch: one read a
    batch, so a poll of a million-recipient job costs a thousand reads)."""
    return jsonify({"errors": recipients_report.error_summary(store(), _readable(job_id))})


@bp.get("/<job_id>/messages.csv")
@limiter.limit(read_limit)
def messages_csv(job_id: str) -> Response:
    lines = recipients_report.csv_lines(store(), _readable(job_id), _status_filter())
    return Response(
        stream_with_context(lines),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-messages.csv"'},
    )


@bp.get("")
@limiter.limit(read_limit)
def listing() -> Response:
    """Jobs newest first, optionally in one state; `next_cursor` pages on."""
    wanted = request.args.get("state")
    if wanted is not None and wanted not in {s.value for s in JobState}:
        raise ApiError(
            400,
            "invalid_state",
            "state must be one of: " + ", ".join(s.value for s in JobState) + ".",
        )
    limit = _limit(50, 500)
    cursor = request.args.get("cursor")
    try:
        before = float(cursor) if cursor else None
    except ValueError:
        before = math.nan
    if before is not None and not math.isfinite(before):
        raise ApiError(400, "invalid_cursor", "cursor must be a next_cursor from a page.")
    found: list[dict[str, Any]] = []
    exhausted = False
    for _ in range(20):  # with a state filter, look through at most 20 pages of candidates
        candidates = store().jobs_before(before, limit)
        jobs = store().jobs([job_id for job_id, _ in candidates])
        for (job_id, score), job in zip(candidates, jobs, strict=True):
            before = score
            if job is None:  # expired
                store().forget(job_id)
            elif wanted is None or job.state.value == wanted:
                found.append(status_document(job))
                if len(found) == limit:
                    break
        if len(found) == limit:
            break
        if len(candidates) < limit:
            exhausted = True
            break
    next_cursor = None if exhausted or before is None else repr(before)
    return jsonify({"jobs": found, "next_cursor": next_cursor})


def find_job(job_id: str) -> Job:
    job = store().job(job_id) if _plausible_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", "No job with this id (it may have expired).")
    return job


def _readable(job_id: str) -> Job:
    job = find_job(job_id)
    if job.erased_at is not None:
        raise ApiError(410, "erased", "This job's per-recipient data were deleted.")
    return job


def _enqueue_pending(job: Job) -> None:
    taskqueue.enqueue(celery(), job.job_id, store().pending_enqueued(job.job_id), job.urgent)


def _status_filter() -> Status | None:
    wanted = request.args.get("status")
    if wanted is None:
        return None
    if wanted not in {s.value for s in Status}:
        raise ApiError(
            400,
            "invalid_status",
            "status must be one of: " + ", ".join(s.value for s in Status) + ".",
        )
    return Status(wanted)


def _limit(default: int, most: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    # (ASCII: int() reads other scripts' digits; bounded: it refuses more than 4,300 of them)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= most:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to {most}.")
    return int(raw)


def _plausible_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)
