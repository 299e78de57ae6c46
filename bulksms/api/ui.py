"""The campaign page: `/ui/`, served by the same app, for people who would rather look than read
JSON. Pages are rendered on the server (readable without JavaScript; every form works without
it); `ui/static/ui.js` keeps a job's page live by polling the API's status JSON once a second.

Signing in checks an API key as the API does and opens a session in Redis (`store.sessions`):
the browser holds only a random session id, in an HttpOnly, SameSite=Strict cookie (Secure over
https). Every form that changes something carries the session's CSRF token; the page's own calls
to the API send it as `X-CSRF-Token`, and the API refuses a session's unsafe request without it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import math
import secrets
import uuid
from typing import IO, Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from bulksms.api import auth, identity, submission
from bulksms.api import jobs as api
from bulksms.api import recipients as recipients_report
from bulksms.api.errors import ApiError
from bulksms.api.ratelimit import limiter, sign_in_limit, submit_limit
from bulksms.extensions import sessions, settings, store
from bulksms.message import GSM_BASIC, GSM_EXTENSION, encode
from bulksms.store import Status
from bulksms.store import sessions as session_store
from bulksms.template import TemplateError, parse

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="ui/templates",
    static_folder="ui/static",
    static_url_path="/static",
)
ACTIONS = (
    ("pause", "Pause", None),
    ("resume", "Resume", None),
    ("cancel", "Cancel", "Cancel this job? Recipients not yet handed to Plivo are never sent."),
    ("retry", "Retry failed", "Send again to the recipients whose failure a retry can help?"),
)
# The page's own scripts and styles only: no inline script, no other origin.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


SIGN_IN_MAX_BODY = 8 * 1024
SIGN_IN_COOKIE = "bulksms_signin"  # the sign-in form's own CSRF token (there is no session yet)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.add_url_rule("/", "root", lambda: redirect(url_for("ui.jobs")))
    app.after_request(_page_headers)


def _page_headers(response: Response) -> Response:
    """On every answer under /ui/ (its errors and redirects too) and /."""
    if request.path == "/" or request.path.startswith("/ui/") or request.path == "/ui":
        response.headers["Content-Security-Policy"] = POLICY
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.errorhandler(ApiError)
def _refused(error: ApiError) -> tuple[str, int]:
    return render_template("ui/error.html", error=error, session=identity.current_session()), (
        error.status
    )


def _signed_in() -> session_store.Session:
    found = identity.current_session()
    if found is None:
        raise _SignIn()
    return found


class _SignIn(Exception):
    """No session: the page answers with the sign-in form."""


@bp.errorhandler(_SignIn)
def _to_sign_in(_: _SignIn) -> BaseResponse:
    return redirect(url_for("ui.sign_in"))


def _form_checked() -> session_store.Session:
    """A form that changes something: a session, the same origin, and its CSRF token."""
    found = _signed_in()
    _same_origin()
    if not auth.csrf_matches(found, request.form.get("csrf_token")):
        raise ApiError(403, "csrf_failed", "This form is stale or not ours: reload the page.")
    return found


def _same_origin() -> None:
    """Browsers name the origin of every POST: another site's, or an opaque one ("null": a
    sandboxed frame, a data: URL), is refused."""
    origin = request.headers.get("Origin")
    if origin is not None and (origin == "null" or _netloc(origin) != request.host):
        raise ApiError(403, "cross_origin", "A form from another site is refused.")


def _netloc(origin: str) -> str | None:
    """The origin's host and port; None for one that is not a URL (`http://[::1`)."""
    try:
        return urlsplit(origin).netloc
    except ValueError:
        return None


# -- signing in ---------------------------------------------------------------------------------
@bp.get("/signin")
def sign_in() -> Response:
    return _sign_in_page(None, 200)


def _sign_in_page(error: str | None, status: int) -> Response:
    """The form, with a token of its own in a SameSite=Strict cookie and in the form: a post
    another site makes (whose cookie a browser leaves out) cannot sign anyone in."""
    token = secrets.token_urlsafe(32)
    page = render_template("ui/signin.html", session=None, error=error, token=token)
    response: Response = make_response(page, status)
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/ui/signin",
    )
    return response


@bp.post("/signin")
@limiter.limit(sign_in_limit, key_func=identity.client_address)
def sign_in_post() -> BaseResponse:
    # Anyone may post here: a form of a token and a key, never the app's 32 MB (Werkzeug reads
    # a urlencoded body whole, and parsing 30 MB of it took a gigabyte).
    request.max_content_length = SIGN_IN_MAX_BODY
    _same_origin()
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    given = request.form.get("signin_token", "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        return _sign_in_page("This form is stale: sign in again.", 403)
    key = request.form.get("api_key", "")
    if not auth.is_valid_key(key, settings().api_keys):
        return _sign_in_page("That key is not valid.", 401)
    previous = identity.current_session()
    if previous is not None:  # (one browser, one session)
        sessions().close(previous.session_id)
    opened = sessions().open(session_store.fingerprint(key))
    response = redirect(url_for("ui.jobs"))
    # A cookie for this browser session only: the server's session decides how long it lives.
    response.set_cookie(
        identity.SESSION_COOKIE,
        opened.session_id,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/ui/signin")
    return response


@bp.post("/signout")
def sign_out() -> BaseResponse:
    found = _form_checked()
    sessions().close(found.session_id)
    response = redirect(url_for("ui.sign_in"))
    response.delete_cookie(identity.SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


# -- pages --------------------------------------------------------------------------------------
@bp.get("")
def slash() -> BaseResponse:
    """/ui to /ui/ as a path: Werkzeug's own redirect to the slash would name the request's
    Host, any Host a client sends, written back in Location for a cache in front to keep."""
    return redirect(url_for("ui.jobs"), 308)


@bp.get("/")
def jobs() -> str:
    found = _signed_in()
    cursor = request.args.get("cursor")
    try:
        before = float(cursor) if cursor else None
    except ValueError:
        before = None
    if before is not None and not math.isfinite(before):
        before = None
    candidates = store().jobs_before(before, 25)
    listed = []
    for job in store().jobs([job_id for job_id, _ in candidates]):
        if job is not None:
            doc = api.document(job)
            doc["finished"] = sum(doc["counts"][s.value] for s in Status) - sum(
                doc["counts"][s] for s in ("pending", "queued", "sent")
            )
            listed.append(doc)
    next_cursor = repr(candidates[-1][1]) if len(candidates) == 25 else None
    return render_template("ui/jobs.html", session=found, jobs=listed, next_cursor=next_cursor)


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> str:
    found = _signed_in()
    current = api.find_job(job_id)
    doc = api.document(current)
    wanted = request.args.get("status") or None
    if wanted is not None and wanted not in {s.value for s in Status}:
        wanted = None
    messages: list[dict[str, Any]] = []
    after = None
    erased = current.erased_at is not None
    if not erased:
        messages, after = recipients_report.page(
            store(),
            current,
            Status(wanted) if wanted else None,
            50,
            recipients_report.Cursor.parse(request.args.get("cursor")),
        )
    return render_template(
        "ui/job.html",
        session=found,
        job=doc,
        actions=ACTIONS,
        allowed=_allowed(doc),
        action_key=uuid.uuid4().hex,
        errors=recipients_report.error_summary(store(), current) if not erased else [],
        messages=messages,
        next_cursor=str(after) if after else None,
        wanted=wanted,
        statuses=[s.value for s in Status],
        field_names=current.field_names,
        erased=erased,
    )


def _allowed(doc: dict[str, Any]) -> set[str]:
    state = doc["state"]
    allowed = set()
    if state not in ("completed", "failed", "cancelled"):
        allowed.add("cancel")
    if state in ("queued", "sending", "paused"):
        allowed.add("pause")
    if state == "paused":
        allowed.add("resume")
    if state in ("sent", "completed", "failed", "cancelled") and doc["batches"]["pending"] == 0:
        allowed.add("retry")
    return allowed


@bp.post("/jobs/<job_id>/<action>")
@limiter.limit(submit_limit)
def act(job_id: str, action: str) -> BaseResponse:
    _form_checked()
    if action == "retry":
        answer = api.retry_job(job_id, request.form.get("idempotency_key") or None)
        return redirect(url_for("ui.job", job_id=answer["job_id"]), 303)
    steps = {"cancel": api.cancel_job, "pause": api.pause_job, "resume": api.resume_job}
    if action not in steps:
        raise ApiError(404, "not_found", "No such action.")
    steps[action](job_id)
    return redirect(url_for("ui.job", job_id=job_id), 303)


# -- sending ------------------------------------------------------------------------------------
@bp.get("/send")
def send() -> str:
    return _send_page(_signed_in(), {})


def _send_page(
    found: session_store.Session,
    form: dict[str, str],
    preview: dict[str, Any] | None = None,
    error: ApiError | None = None,
) -> str:
    return render_template(
        "ui/send.html",
        session=found,
        form=form,
        preview=preview,
        error=error,
        idempotency_key=form.get("idempotency_key") or uuid.uuid4().hex,
        gsm_basic="".join(sorted(GSM_BASIC)),
        gsm_extension="".join(sorted(GSM_EXTENSION)),
        counter=counter_text(form.get("message", "")),
    )


def counter_text(message: str) -> str:
    """What the page's counter says of a message (ui.js says the same as it is typed)."""
    try:
        template = parse(message)
    except TemplateError:
        template = None
    personal = template is not None and template.personal
    text = template.literal if template is not None else message
    encoded = encode(text)
    plural = "segment" if encoded.segments == 1 else "segments"
    counted = f"{encoded.encoding} · {encoded.length} characters · {encoded.segments} {plural}"
    if personal:
        return f"{counted} without its placeholders: Preview counts each recipient's text"
    return counted


@bp.post("/send")
@limiter.limit(submit_limit)
def send_post() -> BaseResponse | tuple[str, int]:
    found = _form_checked()
    form = {name: value for name, value in request.form.items() if name != "csrf_token"}
    try:
        if len(request.files.getlist("contacts")) > 1 or any(
            "\ufffd" in value for value in form.values()
        ):
            raise ApiError(400, "invalid_form", "One contact file, and text in UTF-8, please.")
        body, upload = _body(form)
        if form.get("action") == "preview":
            sub = api.read(body, upload)
            return _send_page(
                found, form, preview=submission.preview_document(sub, settings())
            ), 200
        digest = body if upload is None else {"form": body, "csv": api.file_digest(upload)}
        answer, _ = api.created_once(
            digest,
            lambda slot: api.make_job(body, slot, upload=upload),
            form.get("idempotency_key"),
            auth.scope(),
        )
    except ApiError as refused:
        return _send_page(found, form, error=refused), refused.status
    return redirect(url_for("ui.job", job_id=answer["job_id"]), 303)


def _body(form: dict[str, str]) -> tuple[dict[str, Any], IO[bytes] | None]:
    """The API's request body from the form (a contact file as the API takes one)."""
    body: dict[str, Any] = {"message": form.get("message", "")}
    if form.get("priority"):
        body["priority"] = form["priority"]  # (the API answers a wrong one)
    region = form.get("default_region", "").strip()
    if region:
        body["default_region"] = region
    when = form.get("send_at", "").strip()
    if when:
        body["send_at"] = _with_offset(when, form.get("utc_offset_minutes", "0"))
    upload = request.files.get("contacts")
    if upload is not None and upload.filename:
        stream: IO[bytes] = upload.stream
        return submission.form_body(body), stream
    lines = [line.strip() for line in form.get("recipients", "").splitlines()]
    body["recipients"] = [line for line in lines if line]
    return body, None


def _with_offset(local: str, minutes: str) -> str:
    """A datetime-local value in the browser's zone (its offset from UTC, in minutes)."""
    try:
        offset = dt.timedelta(minutes=max(-1440, min(1440, int(minutes))))
        moment = dt.datetime.fromisoformat(local).replace(tzinfo=dt.timezone(offset))
    except ValueError:
        return local  # (the API answers what is wrong with it)
    return moment.isoformat()
