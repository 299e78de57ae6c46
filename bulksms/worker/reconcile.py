"""Asking Plivo what became of a call whose answer never came.

A call left in flight with no report for any of its recipients may or may not have reached
Plivo: a guess from silence would either lose it or send it twice. So, once the call is older
than the settling delay (`UNKNOWN_OUTCOME_GRACE`: Plivo's list may lag behind, and a call Plivo
took mostly has its reports by then), the sweep lists, for a few of the call's destinations
(spread over the call, those our other calls did not text first), the outbound messages Plivo
took around the call's time (`messages.list(to_number=…, message_time__gte=…,
message_time__lte=…)`, on Redis's clock, with a minute's slack either side for Plivo's):

- a message there from the call's sender whose UUID no other batch of ours got back or was
  told of by a report (`store.handed`) means Plivo took the call (Plivo takes a call's
  destinations all or none): it is recorded as handed over. Where `n` of our calls without an
  answer (unsettled, or still in their time, or claimed while the sweep listed) texted the
  number in the same minutes, it takes `n` such messages;
- no such message for every destination asked is not yet proof: Plivo may have refused
  exactly those numbers (`invalid_number`) in a call it took. So the call's sender's
  (or Powerpack's) whole list for the window is read, a page a listing token, paging on across
  sweeps: a message there to another of the call's numbers that could be its own makes that
  number a candidate, asked as above; none in the whole list means the call never arrived, and
  the very same call is made again. Calls settled this way are kept (`store.handed.found`):
  their other messages have no known UUID until reports name them, and they count against
  any lost call to those numbers until then;
- anything else (fewer messages than calls, a page too full to say, a listing Plivo refused,
  the listing's budget spent) waits for the next sweep, or for a report.

Listing has its own limit at Plivo (20 requests a minute by default): every worker takes from
one shared bucket (`PLIVO_LIST_PER_MINUTE`), which a refusal's Retry-After empties until then
(ten minutes at most).

Messages that Plivo took but that have had no report at all `RECONCILE_AFTER_SECONDS` after
their batch was handed over are looked up one by one (`messages.get(uuid)`), a bounded number a
sweep, each taking a token of the API's own limit (`PLIVO_RATE_LIMIT`, shared with sends), and
what Plivo says is recorded as a report would be. A message whose last report is `sent` is not
looked up: it stays `sent` (no receipt) and is final when the job's report window ends.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bulksms import metrics
from bulksms.config import Settings, sender_key
from bulksms.store import BatchRecord, BatchState, JobStore, Paging, Report, Status
from bulksms.store.handed import FoundCall, HandedBatches, batch_id
from bulksms.store.signals import PlivoBucket
from bulksms.worker.gateway import Found, LookupFailed, PlivoGateway

log = logging.getLogger(__name__)

CANDIDATES = 3  # destinations listed per call at most (one found is enough)
LIST_PAGE = 20  # what one list request shows at most (Plivo's page)
PAGES_PER_CALL = 5  # pages of a sender's list read for one call in one sweep, at most
LOOKUPS_PER_SWEEP = 200  # messages looked up one by one in one sweep, at most
LOOKUPS_PER_JOB = LOOKUPS_PER_SWEEP // 4  # of those, one job's at most (its next go next sweep)
TRACKED = {s.value for s in Status if s is not Status.PENDING}
NAMING_PER_SWEEP = 2  # numbers listed to name the rest of a batch, per sweep (the budget's
# other use, settling calls without an answer, comes first)
HOLD_CAP = 600.0  # a listing's Retry-After is kept to ten minutes at most (its limit counts a
# minute: more is suspect, and the hold stops every lost call's settling)
SKEW = 60.0  # seconds either side of the call's window: Plivo's clock and ours differ


@dataclass(frozen=True)
class Unsettled:
    """A call in flight with no evidence either way."""

    job_id: str
    batch: int
    attempt: int
    offset: int
    size: int
    since: float  # when it was claimed (on Redis's clock)
    sender: str | None  # its `src`, None for a Powerpack (Plivo picks the number)
    powerpack: str | None = None  # the Powerpack's UUID, for one

    @property
    def call(self) -> str:
        return f"{self.job_id}:{self.batch}:{self.attempt}:{self.offset}"

    @property
    def batch_id(self) -> str:
        return batch_id(self.job_id, self.batch)


@dataclass(frozen=True)
class Lookups:
    """What one sweep's lookups for a job came to."""

    looked: int  # messages and numbers asked of Plivo
    held: bool = False  # the budget ran out, or Plivo failed: more to ask next sweep
    settled: bool = False  # nothing left that a lookup could name: none are needed again


class Reconciler:
    def __init__(
        self,
        store: JobStore,
        handed: HandedBatches,
        gateway: Callable[[], PlivoGateway],
        budget: PlivoBucket,
        settings: Settings,
        api_budget: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.handed = handed
        self.gateway = gateway
        self.budget = budget
        self.settings = settings
        self.api_budget = api_budget or (lambda: 0.0)  # Plivo's API limit: 0 when a token was taken
        self._owners_by_hours: dict[tuple[int, int], dict[str, str]] = {}
        self._meanwhile: Callable[[], Sequence[Unsettled]] = lambda: ()
        self._sets: dict[str, set[str]] = {}  # each call's numbers, this sweep
        self._late: list[Unsettled] = []  # calls claimed while it listed
        self._to_name: dict[tuple[str, int], BatchRecord] = {}  # batches with unnamed numbers
        self._blind: set[str] = set()  # calls settled from the list, read this sweep

    def window(self, call: Unsettled) -> tuple[float, float]:
        """When Plivo may have taken the call: from its claim to the end of its longest wait."""
        return call.since - SKEW, call.since + self.settings.in_flight_seconds + SKEW

    def settle(
        self,
        calls: Sequence[Unsettled],
        in_flight: Sequence[Unsettled],
        now: float,
        meanwhile: Callable[[], Sequence[Unsettled]] | None = None,
    ) -> list[tuple[Unsettled, str]]:
        """Each call's verdict: 'submitted' or 'advanced' (Plivo has it), 'resend', 'moved'
        (settled meanwhile) or 'waiting'. `in_flight`: calls still within their time, whose
        messages may be in Plivo's list too (their answers, and UUIDs, not back yet); `now` is
        on Redis's clock, as the calls' starts are. `meanwhile`: the calls in flight claimed
        since the sweep began, read again after a listing shows a message no batch of ours is
        known to have sent."""
        self._owners_by_hours = {}  # (read afresh each sweep)
        self._meanwhile = meanwhile or (lambda: ())
        everyone = [*calls, *in_flight]
        numbers = {
            c.call: self.store.call_numbers(c.job_id, c.batch, c.offset, c.size) for c in everyone
        }
        sets = self._sets = {call: set(found) for call, found in numbers.items()}
        late = self._late = []
        self._blind = set()
        width = self.settings.in_flight_seconds + 2 * SKEW
        since = [c.since for c in calls]
        found = self._found_blind(min(since) - width, max(since) + width, sets) if calls else []
        verdicts = []
        for call in calls:
            rivals = [o for o in [*everyone, *found] if o is not call and self._may_share(call, o)]

            def senders_to(
                number: str, call: Unsettled = call, rivals: list[Unsettled] = rivals
            ) -> list[Unsettled]:
                """The calls that texted `number` in the same minutes, this one first."""
                return [
                    call,
                    *(o for o in rivals if number in sets[o.call]),
                    *(o for o in late if number in sets[o.call] and self._may_share(call, o)),
                ]

            spread = _spread(numbers[call.call], 3 * CANDIDATES)
            candidates = sorted(spread, key=lambda n: len(senders_to(n)))[:CANDIDATES]  # (stable)
            rest = [n for n in numbers[call.call] if n not in candidates]  # (3 candidates)
            verdict = self._ask(call, candidates, rest, senders_to, now)
            if verdict == "found":  # (first: its messages not named yet may be its own)
                self.handed.remember_found(FoundCall(*dataclasses.astuple(call)))
            if verdict in ("found", "absent"):
                verdict = self.store.settle_call(
                    call.job_id,
                    call.batch,
                    call.attempt,
                    call.offset,
                    verdict == "found",
                    call.since,
                )
            metrics.RECONCILED.labels(verdict).inc()
            log.info("call %s with no answer: %s", call.call, verdict)
            verdicts.append((call, verdict))
        left = NAMING_PER_SWEEP * CANDIDATES
        for (job_id, _), record in self._to_name.items():
            left = self._name_the_rest(job_id, record, left, now, everyone)
        self._to_name = {}
        return verdicts

    def _found_blind(self, start: float, end: float, sets: dict[str, set[str]]) -> list[Unsettled]:
        """The calls settled from Plivo's list that were claimed between `start` and `end`,
        each with the numbers no report has named since (in `sets`): Plivo's answer, with their
        UUIDs, was lost, so their messages there are nobody's as far as the UUIDs go, and must
        not pass for another lost call's."""
        found = []
        for known in self.handed.found(start, end):
            other = Unsettled(*dataclasses.astuple(known))
            if other.call not in sets:  # (read once a sweep)
                unnamed = set(self.store.unnamed_numbers(other.job_id, other.batch))
                sent = self.store.call_numbers(other.job_id, other.batch, other.offset, other.size)
                sets[other.call] = unnamed.intersection(sent)
                self._blind.add(other.call)
            if other.call in self._blind and sets[other.call]:
                found.append(other)
        return found

    def _owners(self, start: float, end: float, fresh: bool = False) -> dict[str, str]:
        """Our batches' messages around a window (read once a sweep, it is the heavy part,
        unless `fresh`)."""
        hours = (int(start // 3600), int(end // 3600))
        if fresh or hours not in self._owners_by_hours:
            self._owners_by_hours[hours] = self.handed.owners(start, end)
        return self._owners_by_hours[hours]

    def _may_share(self, call: Unsettled, other: Unsettled) -> bool:
        """Whether `other`'s messages could be taken for `call`'s: overlapping windows, and the
        same sender (or one Plivo picks)."""
        start, end = self.window(call)
        other_start, other_end = self.window(other)
        same_sender = not (call.sender and other.sender) or (
            sender_key(call.sender) == sender_key(other.sender)
        )
        return same_sender and other_start <= end and start <= other_end

    def _ask(
        self,
        call: Unsettled,
        candidates: list[str],
        rest: list[str],
        senders_to: Callable[[str], list[Unsettled]],
        now: float,
    ) -> str:
        """'found', 'absent' (every candidate listed, none of its messages ours, past the
        settling delay, and nothing that could be the call's to its `rest` in its sender's
        list) or 'waiting'."""
        if not candidates:  # every number of the call was left out (opted out): none went
            return "absent"
        grace = self.settings.unknown_outcome_grace
        if now - call.since < grace:
            # Nothing is asked yet: Plivo's list may not show the call, so only "found" could
            # come of it, and its reports (most calls have them in seconds) settle it for free.
            # Asked every sweep, a few such calls spent the listing budget on nothing.
            return "waiting"
        paging = self.store.listing(call.job_id, call.batch, call.call)
        if now < paging.not_before:  # (unclear a moment ago: reports may name it meanwhile)
            return "waiting"
        if rest and paging != Paging():  # (its candidates showed nothing, past the delay)
            return self._scan(call, [*candidates, *rest], senders_to, now, paging)
        verdict = self._look_at(call, candidates, senders_to, now)
        if verdict == "unclear":
            later = Paging(0, now + grace)
            self.store.mark_listing(call.job_id, call.batch, call.call, later)
        if verdict in ("unclear", "waiting"):
            return "waiting"
        if verdict == "none" and rest:  # Plivo may have refused just the candidates
            return self._scan(call, [*candidates, *rest], senders_to, now, paging)
        if paging != Paging():  # (asked again after it was unclear: settled now)
            self.store.mark_listing(call.job_id, call.batch, call.call, Paging())
        return "found" if verdict == "found" else "absent"

    def _scan(
        self,
        call: Unsettled,
        numbers: list[str],
        senders_to: Callable[[str], list[Unsettled]],
        now: float,
        paging: Paging,
    ) -> str:
        """The call's sender's list for its window, read page by page from where the last
        sweep left it, for messages to its `numbers` that could be its own, each such number
        asked as a candidate (those fewest of our calls texted first): 'found' if one says so;
        'absent' once the whole list has none; else 'waiting': the paging goes on at the next
        sweep, or, where a number was unclear (another lost call's message there, say), starts
        again `UNKNOWN_OUTCOME_GRACE` later, once reports may have named it."""
        if now < paging.not_before:
            return "waiting"
        # (Newest first: what Plivo takes while the paging goes on comes in at the top, and
        # only moves what was read further down, to be read again; nothing is skipped.)
        start, end = self.window(call)
        end = min(end, now + SKEW)
        digits = {n.lstrip("+"): n for n in numbers}
        offset, unclear = paging.offset, paging.unclear
        for _ in range(PAGES_PER_CALL):
            page = self._read(
                self.gateway().list_sent_by, call.sender, call.powerpack, start, end, offset
            )
            if page is None:
                break
            owners = self._owners(start, end)
            named = list(
                dict.fromkeys(
                    digits[found.dst.lstrip("+")]
                    for found in page
                    if found.dst.lstrip("+") in digits and self._ours(call, found, owners)
                )
            )
            if named:
                named.sort(key=lambda n: len(senders_to(n)))  # (stable)
                verdict = self._look_at(call, named[:CANDIDATES], senders_to, now)
                if verdict == "found":
                    self.store.mark_listing(call.job_id, call.batch, call.call, Paging())
                    return verdict
                if verdict == "waiting":  # (not all asked: this page again, next sweep)
                    break
                unclear = unclear or verdict == "unclear" or len(named) > CANDIDATES
            if len(page) < LIST_PAGE:  # the end of the list
                if not unclear:  # nothing there is the call's
                    metrics.LOOKUPS.labels("list", "absent").inc()
                    self.store.mark_listing(call.job_id, call.batch, call.call, Paging())
                    return "absent"
                again = Paging(0, now + self.settings.unknown_outcome_grace)
                self.store.mark_listing(call.job_id, call.batch, call.call, again)
                return "waiting"
            offset += len(page)
        # (offset 0 with nothing read yet: begun all the same, the candidates not asked again)
        begun = Paging(offset, paging.not_before or now, unclear)
        self.store.mark_listing(call.job_id, call.batch, call.call, begun)
        return "waiting"

    def _look_at(
        self,
        call: Unsettled,
        candidates: list[str],
        senders_to: Callable[[str], list[Unsettled]],
        now: float,
    ) -> str:
        """Each candidate's list: 'found', 'none' (none of its messages ours), 'unclear' (some
        could be, not enough to say) or 'waiting' (not all asked: the budget, or Plivo). A
        number that `n` of our unsettled or in-flight calls texted
        in the same minutes settles this one only when its list holds `n` messages none of our
        answered calls got back (all of them arrived) or none at all (none did)."""
        start, end = self.window(call)
        absent = True
        for number in candidates:
            listed = self._read(self.gateway().list_outbound, number, start, min(end, now + SKEW))
            if listed is None:
                return "waiting"
            owners = self._owners(start, end)
            ours = [found for found in listed if self._ours(call, found, owners)]
            if any(found.uuid not in owners for found in ours):
                # Taken for this call only because no batch of ours was known to have sent
                # them: read again, after the listing. Another call claimed before its answer
                # came (its message in the list) is in flight still, or its answer has been
                # recorded: the calls first, then the answers, or it could slip between.
                self._catch_up()
                owners = self._owners(start, end, fresh=True)
                ours = [found for found in listed if self._ours(call, found, owners)]
            senders = senders_to(number)
            group = len(senders)
            if ours and len(ours) >= group:
                metrics.LOOKUPS.labels("list", "found").inc()
                uuids = [f.uuid for f in ours]
                # (More messages than calls: a call of ours the sweep did not see, claimed after
                # its read, sent there too. Nothing is kept: its message is not another's.)
                if len(ours) == group == 1:  # this call's: others' lists will know it
                    self.store.remember_answer(call.job_id, call.batch, uuids, now)
                elif len(ours) == group:  # the group's, each one's not known: theirs alone
                    self.handed.remember_group(uuids, [c.batch_id for c in senders], now)
                return "found"
            if ours or len(listed) >= LIST_PAGE:  # some of a group's, or a page too full to say
                metrics.LOOKUPS.labels("list", "ambiguous").inc()
                absent = False
                continue
            metrics.LOOKUPS.labels("list", "absent").inc()
        return "none" if absent else "unclear"

    def _read(self, request: Callable[..., list[Found]], *args: Any) -> list[Found] | None:
        """One list request, within the listing's budget: None when the budget is spent or
        Plivo failed. A refusal's Retry-After holds the budget that long, for every worker:
        asking sooner is refused again, and spends the tokens the refusal proved were not
        there (the bucket refills at Plivo's rate, but Plivo may count a minute as it likes)."""
        if self.budget.take() > 0:
            metrics.LOOKUPS.labels("list", "budget").inc()
            return None
        try:
            return request(*args)
        except LookupFailed as exc:
            log.warning("Plivo's message list failed: %s", exc.reason)
            metrics.LOOKUPS.labels("list", "error").inc()
            if exc.retry_after:
                self.budget.hold(min(exc.retry_after, HOLD_CAP))
            return None

    def _catch_up(self) -> None:
        """Count the calls claimed since the sweep began that it had not seen (each claim
        woke its job) among the rivals (`senders_to`)."""
        for other in self._meanwhile():
            if other.call not in self._sets:
                self._sets[other.call] = set(
                    self.store.call_numbers(other.job_id, other.batch, other.offset, other.size)
                )
                self._late.append(other)

    def _ours(self, call: Unsettled, found: Found, owners: dict[str, str]) -> bool:
        if call.sender and sender_key(found.src) != sender_key(call.sender):
            return False
        return _owned_by(owners.get(found.uuid), call.batch_id)

    def look_up_silent(self, job_id: str, now: float, allowed: int = LOOKUPS_PER_SWEEP) -> Lookups:
        """Look up messages of the job's handed-over batches that no report has named for
        `RECONCILE_AFTER_SECONDS`, and record what Plivo says. A round over a batch goes on
        across sweeps (its cursor, the last UUID looked up), and the next starts
        `RECONCILE_AFTER_SECONDS` after it began. `allowed` of them at most (what is left of
        the sweep's `LOOKUPS_PER_SWEEP`). Says how many were looked up, whether the budget or
        Plivo held the lookups back, and whether the job has nothing left that a lookup could
        name (what is silent or unnamed only ever shrinks)."""
        after = self.settings.reconcile_after_seconds
        left = allowed
        self._owners_by_hours = {}  # (read afresh each sweep)
        batches, rounds = self.store.lookup_rounds(job_id)
        settled = True  # until a batch is not looked at, or has something left
        for record in batches:
            if record.state is not BatchState.SUBMITTED:
                continue
            if now - record.since < after:
                settled = False
                continue
            started, cursor = rounds.get(record.batch, (0.0, ""))
            if not cursor and now - started < after:
                settled = False
                continue
            if left <= 0:  # (the batch's round, begun or not, goes on at the next sweep)
                return Lookups(allowed - left, held=True)
            begun = bool(cursor)
            if not cursor:
                started = now
            silent = sorted(u for u in self.store.silent_uuids(job_id, record.batch) if u > cursor)
            if silent or cursor:
                settled = False
            else:  # every answered message is named: the rest, if any, lost their answer
                # (named after the sweep's calls are weighed: another's message may be there)
                unnamed = bool(self.store.unnamed_numbers(job_id, record.batch))
                if unnamed:
                    self._to_name[(job_id, record.batch)] = record
                settled = settled and not unnamed
            for message_uuid in silent:
                if left <= 0 or self.api_budget() > 0:
                    metrics.LOOKUPS.labels("get", "budget").inc()
                    if begun:  # (a round not begun stays due: it begins at the next sweep)
                        self.store.mark_lookup_round(job_id, record.batch, started, cursor)
                    return Lookups(allowed - left, held=True)
                left -= 1
                try:
                    found = self.gateway().lookup(message_uuid)
                except LookupFailed as exc:
                    log.warning("Plivo's message lookup failed: %s", exc.reason)
                    metrics.LOOKUPS.labels("get", "error").inc()
                    if begun:
                        self.store.mark_lookup_round(job_id, record.batch, started, cursor)
                    return Lookups(allowed - left, held=True)
                cursor, begun = message_uuid, True
                self._record(job_id, record.batch, message_uuid, found)
            self.store.mark_lookup_round(job_id, record.batch, started, "")
        return Lookups(allowed - left, settled=settled)

    def _name_the_rest(
        self, job_id: str, record: BatchRecord, left: int, now: float, calls: list[Unsettled]
    ) -> int:
        """Numbers of a batch whose call was settled from evidence (its answer, with Plivo's
        `invalid_number` list, was lost) that nothing has named since: Plivo's list for each
        says whether it took the number (recorded) or refused it (nothing there, past the
        settling delay: `rejected`, invalid_number). A message there is the batch's only where
        no other call of ours without its answer (`calls`, those claimed meanwhile, those
        settled from the list) texted the number since the batch's job began: else it could be
        theirs. At the listing's own rate; `left`: the listings this sweep may still make,
        returned less those made (a few a batch: the next sweep goes on with the others)."""
        unnamed = self.store.unnamed_numbers(job_id, record.batch)
        job = self.store.job(job_id) if unnamed else None
        if job is None or job.started_at is None:
            return left
        # From the job's first claim (Redis's clock) to now: every call of the batch was made
        # in between, whatever the clocks of the workers that recorded them.
        start, end = job.started_at - SKEW, now + SKEW
        sender = None if job.sending.powerpack_uuid else job.sending.src
        owners = self._owners(start, end)
        mine = batch_id(job_id, record.batch)
        self._catch_up()
        others = [
            c
            for c in [*calls, *self._late, *self._found_blind(start - SKEW, end, self._sets)]
            if c.batch_id != mine
            and c.since - SKEW <= end
            and start <= c.since + self.settings.in_flight_seconds + SKEW
            and (not (sender and c.sender) or sender_key(sender) == sender_key(c.sender))
        ]
        # A few a sweep, and from a point that moves on: settling calls shares the listing's
        # budget, and a number that stays unclear must not hold up the others.
        first = int(now // max(1.0, self.settings.reconcile_after_seconds)) % len(unnamed)
        for number in (unnamed[first:] + unnamed[:first])[:NAMING_PER_SWEEP]:
            if left <= 0:
                break
            left -= 1
            listed = self._read(self.gateway().list_outbound, number, start, end)
            if listed is None:
                break
            # (without a sender of its own, a Powerpack's, whose message it is cannot be told)
            ours = [
                f
                for f in listed
                if sender
                and sender_key(f.src) == sender_key(sender)
                and _owned_by(owners.get(f.uuid), mine)
            ]
            if len(ours) == 1 and not any(number in self._sets[o.call] for o in others):
                metrics.LOOKUPS.labels("list", "found").inc()
                self._record(job_id, record.batch, ours[0].uuid, ours[0])
            elif not listed and now - record.since >= self.settings.unknown_outcome_grace:
                # Nothing at all to this number since the job began: Plivo refused it.
                metrics.LOOKUPS.labels("list", "refused").inc()
                self.store.record_report(
                    Report(job_id, record.batch, number, Status.REJECTED, "", "invalid_number")
                )
            else:  # several, another call's maybe, or a page too full to say: left as it is
                metrics.LOOKUPS.labels("list", "ambiguous").inc()
        return left

    def _record(self, job_id: str, batch: int, message_uuid: str, found: Found | None) -> None:
        if found is None or found.state not in TRACKED:
            metrics.LOOKUPS.labels("get", "unknown").inc()
            return
        metrics.LOOKUPS.labels("get", found.state).inc()
        self.store.record_report(
            Report(
                job_id,
                batch,
                found.dst,
                Status(found.state),
                uuid=message_uuid,
                error_code=found.error_code,
                units=found.units,
                amount=found.amount,
            )
        )


def _spread(numbers: list[str], count: int) -> list[str]:
    """Up to `count` numbers spread over the call: first, last, middle, then the quarters and
    so on. Numbers next to each other in a sorted list are likelier to share a fate (a range
    Plivo refuses, a list another campaign also texts)."""
    last = len(numbers) - 1
    if last < 0:
        return []
    order, parts = [0, last], 2
    while len(set(order)) < min(count, last + 1):
        order += [round(last * k / parts) for k in range(1, parts, 2)]
        parts *= 2
    return [numbers[i] for i in dict.fromkeys(order)][:count]


def _owned_by(owner: str | None, batch: str) -> bool:
    """Whether a message whose known owner is `owner` (a batch, the batches of a group, or
    None: none known) may be `batch`'s."""
    return owner is None or batch in owner.split(",")
