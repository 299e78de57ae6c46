"""The reconciler's verdicts (`bulksms.worker.reconcile`) on what Plivo's message list shows:
found means Plivo took the call only for a message no other call of ours got back; absent
resends only past the settling delay; anything unclear waits."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bulksms.config import Settings
from bulksms.store import BatchRecord, BatchState, Paging, Sending, Status
from bulksms.worker.gateway import Found, LookupFailed
from bulksms.worker.reconcile import CANDIDATES, HOLD_CAP, Lookups, Reconciler, Unsettled
from tests.helpers.fakes import FakeHanded, job

NOW = 1_000_000.0
SETTINGS = Settings(unknown_outcome_grace=90.0, plivo_timeout=5.0)
SENDER = "+14155550199"


@dataclass
class Store:
    numbers: dict[tuple[str, int], list[str]]
    settled: list[tuple[str, int, int, int, bool]] = field(default_factory=list)
    remembered: list[tuple[str, int, list[str]]] = field(default_factory=list)
    paging: dict[tuple[str, int], tuple[str, Paging]] = field(default_factory=dict)
    named: set[str] = field(default_factory=set)  # numbers a report named

    def listing(self, job_id: str, batch: int, call: str) -> Paging:
        owner, paging = self.paging.get((job_id, batch), ("", Paging()))
        return paging if owner == call else Paging()

    def mark_listing(self, job_id: str, batch: int, call: str, paging: Paging) -> None:
        if paging != Paging():
            self.paging[(job_id, batch)] = (call, paging)
        else:
            self.paging.pop((job_id, batch), None)

    def unnamed_numbers(self, job_id: str, batch: int) -> list[str]:
        return [n for n in self.numbers.get((job_id, batch), []) if n not in self.named]

    def call_numbers(self, job_id: str, batch: int, offset: int, size: int) -> list[str]:
        found = self.numbers[(job_id, batch)]
        return found[offset : offset + size] if size else found[offset:]

    def remember_answer(self, job_id: str, batch: int, uuids: list[str], at: float) -> None:
        self.remembered.append((job_id, batch, uuids))

    def settle_call(
        self,
        job_id: str,
        batch: int,
        attempt: int,
        offset: int,
        found: bool,
        since: float | None = None,
    ) -> str:
        self.settled.append((job_id, batch, attempt, offset, found))
        return "submitted" if found else "resend"


@dataclass
class Gateway:
    messages: list[Found] = field(default_factory=list)
    fail: bool = False
    asked: list[tuple[str, float, float]] = field(default_factory=list)
    retry_after: float | None = None  # with `fail`: Plivo's Retry-After

    pages: list[tuple[str | None, int]] = field(default_factory=list)

    def list_outbound(self, to_number: str, since: float, until: float) -> list[Found]:
        self.asked.append((to_number, since, until))
        if self.fail:
            raise LookupFailed("Plivo answered 500", self.retry_after)
        return [m for m in self.messages if m.dst == to_number and since <= m.at <= until]

    def list_sent_by(
        self, sender: str | None, powerpack: str | None, since: float, until: float, offset: int
    ) -> list[Found]:
        """(Every message here went through the Powerpack, when one is asked for.)"""
        self.pages.append((sender or powerpack, offset))
        if self.fail:
            raise LookupFailed("Plivo answered 500", self.retry_after)
        found = [
            m
            for m in self.messages
            if since <= m.at <= until and (not sender or m.src == sender.lstrip("+"))
        ]
        found.sort(key=lambda m: m.at, reverse=True)
        return found[offset : offset + 20]


@dataclass
class Budget:
    tokens: int = 100
    held: list[float] = field(default_factory=list)

    def take(self) -> float:
        if self.tokens <= 0:
            return 3.0
        self.tokens -= 1
        return 0.0

    def hold(self, seconds: float) -> None:
        self.held.append(seconds)
        self.tokens = 0


def message(to: str, uuid: str = "u-1", at: float = NOW - 200, src: str = SENDER) -> Found:
    return Found(uuid, src.lstrip("+"), to, "sent", at, 1, 0.005, "")


def call(batch: int = 0, since: float = NOW - 200, job_id: str = "j1") -> Unsettled:
    return Unsettled(job_id, batch, 1, 0, 0, since, SENDER)


def reconciler(
    store: Store, gateway: Gateway, handed: FakeHanded | None = None, budget: Budget | None = None
) -> Reconciler:
    return Reconciler(
        store,  # type: ignore[arg-type]
        handed or FakeHanded(),  # type: ignore[arg-type]
        lambda: gateway,  # type: ignore[arg-type, return-value]
        budget or Budget(),  # type: ignore[arg-type]
        SETTINGS,
    )


NUMBERS = {("j1", 0): ["+14155550100", "+14155550101", "+14155550102", "+14155550103"]}


def test_a_message_no_other_call_got_back_means_plivo_took_the_call() -> None:
    store, gateway = Store(dict(NUMBERS)), Gateway([message("+14155550103")])
    verdicts = reconciler(store, gateway).settle([call()], [], NOW)
    assert [v for _, v in verdicts] == ["submitted"]
    assert store.settled == [("j1", 0, 1, 0, True)]
    assert store.remembered == [("j1", 0, ["u-1"])]  # others' lists now know it as j1's
    # It listed destinations (first, last…) until one showed the message, in the call's window.
    assert [a[0] for a in gateway.asked] == ["+14155550100", "+14155550103"]
    assert all(since <= NOW - 200 <= until for _, since, until in gateway.asked)


def test_a_message_another_call_got_back_is_not_evidence() -> None:
    handed = FakeHanded({"u-1": "j2:0"})
    store = Store(dict(NUMBERS))
    gateway = Gateway([message(n) for n in NUMBERS[("j1", 0)]])  # all the same UUID: another's
    verdicts = reconciler(store, gateway, handed).settle([call()], [], NOW)
    assert [v for _, v in verdicts] == ["resend"]
    assert len(gateway.asked) == CANDIDATES
    # …while this very call's own UUID (its answer got back, its record did not) is.
    handed = FakeHanded({"u-1": "j1:0"})
    assert [
        v for _, v in reconciler(Store(dict(NUMBERS)), gateway, handed).settle([call()], [], NOW)
    ] == ["submitted"]


def test_a_message_another_call_recorded_while_the_sweep_listed_is_not_evidence() -> None:
    """Our batches' messages are read once a sweep; a message found with no known owner is
    judged on a second read, after its listing: another call's answer recorded between the
    two (its message already in Plivo's list) does not pass for this call's."""
    handed = FakeHanded()
    last = NUMBERS[("j1", 0)][-1]

    @dataclass
    class RecordedMeanwhile(Gateway):
        def list_outbound(self, to_number: str, since: float, until: float) -> list[Found]:
            if to_number == last:  # (listed after the first read of our batches' messages)
                handed.known["u-y"] = "j2:0"
                return [message(last, "u-y")]
            return super().list_outbound(to_number, since, until)

    store, gateway = Store(dict(NUMBERS)), RecordedMeanwhile()
    verdicts = reconciler(store, gateway, handed).settle([call()], [], NOW)
    assert [a[0] for a in gateway.asked][0] != last  # (the first read came before)
    assert [v for _, v in verdicts] == ["resend"]
    assert store.remembered == []


def test_a_call_claimed_while_the_sweep_listed_counts_against_the_lost_one() -> None:
    """A call to the same number claimed after the sweep began, whose message is in the list
    before its answer is back: the listing's unowned message is weighed with that call among
    the rivals (two calls, one message: unclear), not taken for the lost call's (marked sent,
    never sent)."""
    one = {("j1", 0): ["+14155550100"], ("j2", 0): ["+14155550100"]}
    claimed: list[Unsettled] = []

    @dataclass
    class ClaimedMeanwhile(Gateway):
        def list_outbound(self, to_number: str, since: float, until: float) -> list[Found]:
            claimed.append(call(job_id="j2", since=NOW - 1))  # (its answer not yet back)
            # (stamped by a Plivo whose clock is 40 s behind: within the lost call's window)
            self.messages.append(message(to_number, "u-new", at=NOW - 40))
            return super().list_outbound(to_number, since, until)

    store, lost = Store(dict(one)), call(since=NOW - 100)  # (past the grace)
    verdicts = reconciler(store, ClaimedMeanwhile()).settle([lost], [], NOW, lambda: claimed)
    assert [v for _, v in verdicts] == ["waiting"] and store.settled == []


def test_a_message_from_another_sender_is_not_evidence() -> None:
    store = Store(dict(NUMBERS))
    gateway = Gateway([message(n, src="+14155550000") for n in NUMBERS[("j1", 0)]])
    assert [v for _, v in reconciler(store, gateway).settle([call()], [], NOW)] == ["resend"]


def test_nothing_found_resends_only_past_the_settling_delay() -> None:
    store, gateway = Store(dict(NUMBERS)), Gateway()
    recent = call(since=NOW - 30)  # Plivo's list may not show it yet
    assert [v for _, v in reconciler(store, gateway).settle([recent], [], NOW)] == ["waiting"]
    assert store.settled == []
    assert [v for _, v in reconciler(store, gateway).settle([call()], [], NOW)] == ["resend"]


def test_nothing_is_listed_before_the_settling_delay() -> None:
    """Within it Plivo's list may not show the call, and most such calls have reports first:
    asked every sweep, the listing budget (20 a minute) went on calls that could not settle."""
    taken = [message(n, at=NOW - 29) for n in NUMBERS[("j1", 0)]]
    store, gateway, recent = Store(dict(NUMBERS)), Gateway(taken), call(since=NOW - 30)
    for at in (NOW, NOW + 30):
        assert [v for _, v in reconciler(store, gateway).settle([recent], [], at)] == ["waiting"]
    assert gateway.asked == [] and gateway.pages == []
    assert [v for _, v in reconciler(store, gateway).settle([recent], [], NOW + 60)] == [
        "submitted"
    ]


def test_a_refused_listing_holds_the_budget_as_long_as_plivo_says() -> None:
    """A 429 with Retry-After: every worker stops listing that long (each request sooner is
    refused again, and the refusals came on top of the minute Plivo counts)."""
    store, budget = Store(dict(NUMBERS)), Budget()
    refused = Gateway(fail=True, retry_after=60.0)
    assert [v for _, v in reconciler(store, refused, budget=budget).settle([call()], [], NOW)] == [
        "waiting"
    ]
    assert budget.held == [60.0] and len(refused.asked) == 1
    plain, budget = Gateway(fail=True), Budget()  # (no Retry-After: the bucket's own pace)
    reconciler(store, plain, budget=budget).settle([call()], [], NOW)
    assert len(plain.asked) == 1 and budget.held == []
    absurd, budget = Gateway(fail=True, retry_after=86_400.0), Budget()
    reconciler(store, absurd, budget=budget).settle([call()], [], NOW)
    assert budget.held == [HOLD_CAP]  # (ten minutes at most: it stops every lost call)


def test_a_call_whose_every_number_was_left_out_is_absent_at_once() -> None:
    """Its worker died between leaving out every number (all opted out) and recording the
    call: nothing went to Plivo, and nothing is listed to say so."""
    store, gateway = Store({("j1", 0): []}), Gateway()
    assert [v for _, v in reconciler(store, gateway).settle([call()], [], NOW)] == ["resend"]
    assert gateway.asked == []


def test_a_failed_listing_or_a_spent_budget_waits() -> None:
    store = Store(dict(NUMBERS))
    assert [v for _, v in reconciler(store, Gateway(fail=True)).settle([call()], [], NOW)] == [
        "waiting"
    ]
    spent = reconciler(store, Gateway(), budget=Budget(tokens=2)).settle([call()], [], NOW)
    assert [v for _, v in spent] == ["waiting"]
    assert store.settled == []


def test_numbers_other_calls_without_an_answer_texted_take_as_many_messages() -> None:
    numbers = {("j1", 0): ["+14155550100", "+14155550101"], ("j2", 0): ["+14155550100"]}
    first, second = call(), call(job_id="j2")
    # One message to the shared number, two calls without an answer that texted it: whose?
    store, gateway = Store(dict(numbers)), Gateway([message("+14155550100")])
    verdicts = dict(
        (c.job_id, v) for c, v in reconciler(store, gateway).settle([first, second], [], NOW)
    )
    assert verdicts == {"j1": "waiting", "j2": "waiting"} and store.settled == []
    # j1's own number is asked first (…0101: nothing there, but not enough to say alone).
    assert gateway.asked[0][0] == "+14155550101"
    # Two messages: both calls arrived. None: neither did.
    two = Gateway([message("+14155550100", "u-1"), message("+14155550100", "u-2")])
    verdicts = dict(
        (c.job_id, v)
        for c, v in reconciler(Store(dict(numbers)), two).settle([first, second], [], NOW)
    )
    assert verdicts == {"j1": "submitted", "j2": "submitted"}
    none = reconciler(Store(dict(numbers)), Gateway()).settle([first, second], [], NOW)
    assert [v for _, v in none] == ["resend", "resend"]
    # A call still within its time counts too: its message may be there, its UUIDs not back.
    store = Store({**numbers, ("j3", 0): ["+14155550101"]})
    alive = call(job_id="j3", since=NOW - 190)
    only = reconciler(store, Gateway([message("+14155550101")])).settle([first], [alive], NOW)
    assert [v for _, v in only] == ["waiting"]
    # Calls far apart in time do not get in each other's way.
    store, gateway = Store(dict(numbers)), Gateway([message("+14155550100")])
    apart = call(job_id="j2", since=NOW - 5000)
    verdicts = dict(
        (c.job_id, v) for c, v in reconciler(store, gateway).settle([first, apart], [], NOW)
    )
    assert verdicts == {"j1": "submitted", "j2": "resend"}


def test_messages_found_for_a_group_of_calls_are_no_later_call_s() -> None:
    """Two lost calls to one number, both found (two messages): neither's own is known, but
    both are known as theirs, so a third call to that number, lost later, is not taken as sent
    on their messages (it was marked sent and never sent)."""
    shared = "+14155550100"
    numbers = {("j1", 0): [shared], ("j2", 0): [shared], ("j3", 0): [shared]}
    handed = FakeHanded()
    two = Gateway([message(shared, "u-1"), message(shared, "u-2")])
    both = reconciler(Store(dict(numbers)), two, handed).settle(
        [call(), call(job_id="j2")], [], NOW
    )
    assert [v for _, v in both] == ["submitted", "submitted"]
    later = call(job_id="j3", since=NOW - 190)  # (their messages within its minutes)
    verdicts = reconciler(Store(dict(numbers)), two, handed).settle([later], [], NOW + 100)
    assert [v for _, v in verdicts] == ["resend"]


def test_messages_beyond_the_calls_are_kept_as_no_one_s() -> None:
    """Three messages where the sweep knew of two lost calls: a third call it did not see
    (claimed after its read, its answer lost too) sent there. The two are found, but nothing
    is kept as theirs, so the third, looked at later, is found on its own message, not resent
    (a second text) as it was when all three were kept as the group's."""
    shared = "+14155550100"
    numbers = {("j1", 0): [shared], ("j2", 0): [shared], ("j3", 0): [shared]}
    handed = FakeHanded()
    three = Gateway([message(shared, f"u-{n}") for n in (1, 2, 3)])
    both = reconciler(Store(dict(numbers)), three, handed).settle(
        [call(), call(job_id="j2")], [], NOW
    )
    assert [v for _, v in both] == ["submitted", "submitted"] and handed.known == {}
    unseen = call(job_id="j3", since=NOW - 150)
    verdicts = reconciler(Store(dict(numbers)), three, handed).settle([unseen], [], NOW + 100)
    assert [v for _, v in verdicts] == ["submitted"]
    # (the two, found without their answers, weigh with it: the three are the three's)
    assert handed.known == dict.fromkeys(["u-1", "u-2", "u-3"], "j3:0,j1:0,j2:0")
    # Alone, the same: two messages for one call keep neither as its own.
    alone, handed = Store({("j1", 0): [shared]}), FakeHanded()
    two = Gateway([message(shared, "u-1"), message(shared, "u-2")])
    assert [v for _, v in reconciler(alone, two, handed).settle([call()], [], NOW)] == ["submitted"]
    assert alone.remembered == [] and handed.known == {}


def test_a_full_page_is_not_an_absence_and_candidates_spread_over_the_call() -> None:
    numbers = {("j1", 0): [f"+1415555{n:04d}" for n in range(100)]}
    others = [message("+14155550000", f"o-{n}", src="+14155550000") for n in range(20)]
    store, gateway = Store(numbers), Gateway(others)
    assert [v for _, v in reconciler(store, gateway).settle([call()], [], NOW)] == ["waiting"]
    asked = [a[0] for a in gateway.asked]
    assert asked == ["+14155550000", "+14155550099", "+14155550050"]  # first, last, middle


def test_candidates_plivo_refused_in_a_call_it_took_do_not_make_it_absent() -> None:
    """Plivo took the call but refused its first, last and middle numbers (invalid_number):
    nothing is listed for the candidates. The sender's list for the window shows a message
    to the fourth number, which that number's own list confirms: the call is found, not made
    again (every number it took was texted twice)."""
    first, fourth = NUMBERS[("j1", 0)][0], NUMBERS[("j1", 0)][1]
    noise = [message(f"+1650555{n:04d}", f"o-{n}", NOW - 190 + n) for n in range(30)]
    store, gateway = Store(dict(NUMBERS)), Gateway([message(fourth, "u-4"), *noise])
    verdicts = reconciler(store, gateway).settle([call()], [], NOW)
    assert [v for _, v in verdicts] == ["submitted"]
    assert fourth not in [a[0] for a in gateway.asked[:CANDIDATES]]  # (only the scan names it)
    assert gateway.pages == [(SENDER, 0), (SENDER, 20)]  # the window's pages, newest first
    assert gateway.asked[-1][0] == fourth and store.remembered == [("j1", 0, ["u-4"])]
    assert store.paging == {} and first in [a[0] for a in gateway.asked]


def test_the_sender_s_list_pages_on_across_sweeps_before_a_call_is_made_again() -> None:
    """Nothing of the call's anywhere in its sender's list: the call is made again, but only
    once the whole list was read, a few pages a sweep, each page once, as the budget allows.
    Messages to its numbers that other batches got back, or from another sender, are not
    its own."""
    rest = NUMBERS[("j1", 0)][1]
    handed = FakeHanded({"x-1": "j2:0"})
    others = [message(f"+1650555{n:04d}", f"o-{n}", NOW - 199 + n / 10) for n in range(200)]
    gateway = Gateway([*others, message(rest, "x-1"), message(rest, "x-2", src="+14155550000")])
    store = Store(dict(NUMBERS))
    first = reconciler(store, gateway, handed, Budget(tokens=CANDIDATES + 2)).settle(
        [call()], [], NOW
    )
    assert [v for _, v in first] == ["waiting"] and store.settled == []
    assert gateway.pages == [(SENDER, 0), (SENDER, 20)]
    assert store.paging == {("j1", 0): ("j1:0:1:0", Paging(40, NOW))}
    second = reconciler(store, gateway, handed).settle([call()], [], NOW + 10)
    assert [v for _, v in second] == ["waiting"]  # (five pages a call a sweep)
    third = reconciler(store, gateway, handed).settle([call()], [], NOW + 20)
    assert [v for _, v in third] == ["resend"] and store.paging == {}
    assert [offset for _, offset in gateway.pages] == list(range(0, 201, 20))
    # The paging belongs to one call: another claim of the batch starts from the top.
    store.paging[("j1", 0)] = ("j1:0:1:0", Paging(60, NOW))
    gateway.pages.clear()
    again = replace(call(), attempt=2)
    reconciler(store, gateway, handed).settle([again], [], NOW)
    assert gateway.pages[0] == (SENDER, 0)


def test_a_message_of_a_call_found_without_its_answer_is_not_another_lost_call_s() -> None:
    """Two lost calls share a number X. A reached Plivo and is found at its own number Y: its
    message to X stays nobody's as far as UUIDs go until a report names it. B never reached
    Plivo: its candidates show nothing, and its sender's list shows A's message to X. A,
    settled, is weighed with B at X for as long as X is unnamed in A's batch (B took A's
    message for its own, and was marked sent, never sent); once named, B is made again."""
    x, y = "+14155550150", "+14155550160"
    b = ["+14155550100", x, "+14155550170", "+14155550180", "+14155550190"]
    store = Store({("jA", 0): [y, x], ("jB", 0): b})
    gateway = Gateway([message(y, "a-y"), message(x, "a-x")])
    handed = FakeHanded()
    lost_a, lost_b = call(job_id="jA"), call(job_id="jB")
    first = reconciler(store, gateway, handed).settle([lost_a, lost_b], [], NOW)
    assert [v for _, v in first] == ["submitted", "waiting"]
    assert [c.job_id for c in handed.found_calls] == ["jA"]
    later = reconciler(store, gateway, handed).settle([lost_b], [], NOW + 100)
    assert [v for _, v in later] == ["waiting"] and store.settled[-1][0] == "jA"
    store.named.add(x)  # (A's report for X)
    handed.known["a-x"] = "jA:0"
    named = reconciler(store, gateway, handed).settle([lost_b], [], NOW + 200)
    assert [v for _, v in named] == ["resend"]


def test_an_unclear_number_neither_settles_a_call_nor_holds_the_listing_budget() -> None:
    """C reached Plivo (its candidates refused), R did not; they share X. C is found at a
    number of its own (fewest calls first), not held up by X. R, unclear at X while C's
    message there is unnamed, waits, and pages its list again only UNKNOWN_OUTCOME_GRACE
    later: a third lost call gets the budget meanwhile and is made again."""
    x = "+14155550150"
    c = ["+14155550100", x, "+14155550120", "+14155550130", "+14155550140"]
    r = ["+14155550200", x, "+14155550220", "+14155550230", "+14155550240"]
    store = Store({("jC", 0): c, ("jR", 0): r, ("jD", 0): ["+14155550300"]})
    gateway = Gateway([message(x, "c-x"), message(c[3], "c-3")])
    handed = FakeHanded()
    lost_c, lost_r, lost_d = call(job_id="jC"), call(job_id="jR"), call(job_id="jD")
    first = reconciler(store, gateway, handed).settle([lost_c, lost_r], [], NOW)
    assert [v for _, v in first] == ["submitted", "waiting"]
    assert store.remembered == [("jC", 0, ["c-3"])]
    calls = len(gateway.asked) + len(gateway.pages)
    second = reconciler(store, gateway, handed, Budget(tokens=1)).settle(
        [lost_r, lost_d], [], NOW + 10
    )
    assert [v for _, v in second] == ["waiting", "resend"]
    assert len(gateway.asked) + len(gateway.pages) == calls + 1  # (D's one listing)
    again = reconciler(store, gateway, handed).settle([lost_r], [], NOW + 100)
    assert [v for _, v in again] == ["waiting"]  # (X still unnamed in C's batch)


def test_a_call_unclear_at_its_candidates_asks_again_only_after_the_settling_delay() -> None:
    """Two lost calls, one message at their one number: unclear for both. Listed every
    sweep, a few such calls spent the whole listing budget; they ask again once reports may
    have named it."""
    one = {("j1", 0): ["+14155550100"], ("j2", 0): ["+14155550100"]}
    store, gateway = Store(dict(one)), Gateway([message("+14155550100")])
    both = [call(), call(job_id="j2")]
    asked = []
    for at in (NOW, NOW + 10, NOW + 100):
        verdicts = reconciler(store, gateway).settle(both, [], at)
        assert [v for _, v in verdicts] == ["waiting", "waiting"]
        asked.append(len(gateway.asked))
    assert asked == [2, 2, 4]


def test_a_powerpack_s_call_reads_the_powerpack_s_list() -> None:
    fourth = NUMBERS[("j1", 0)][1]
    store, gateway = Store(dict(NUMBERS)), Gateway([message(fourth, "u-4", src="+14155550000")])
    through = replace(call(), sender=None, powerpack="pp-1")
    assert [v for _, v in reconciler(store, gateway).settle([through], [], NOW)] == ["submitted"]
    assert gateway.pages == [("pp-1", 0)]


@dataclass
class SilentStore:
    """A job of one submitted batch whose messages no report named."""

    silent: list[str]
    since: float = NOW - 1000
    rounds: dict[int, tuple[float, str]] = field(default_factory=dict)
    reports: list[Any] = field(default_factory=list)

    def lookup_rounds(self, job_id: str) -> tuple[list[BatchRecord], dict[int, tuple[float, str]]]:
        return [BatchRecord(0, BatchState.SUBMITTED, self.since, 0, "api")], dict(self.rounds)

    def silent_uuids(self, job_id: str, batch: int) -> list[str]:
        named = {r.uuid for r in self.reports}
        return [u for u in self.silent if u not in named]

    def mark_lookup_round(self, job_id: str, batch: int, started: float, cursor: str) -> None:
        self.rounds[batch] = (started, cursor)

    def record_report(self, report: Any) -> int:
        if report.status is not Status.QUEUED:
            self.reports.append(report)
        return 1


@dataclass
class LookupGateway:
    asked: list[str] = field(default_factory=list)

    def lookup(self, message_uuid: str) -> Found | None:
        self.asked.append(message_uuid)
        state = "queued" if message_uuid == "u-2" else "delivered"
        return Found(
            message_uuid, "14155550199", f"1415555010{message_uuid[-1]}", state, NOW, 1, 0.005, ""
        )


def test_silent_messages_are_looked_up_in_bounded_rounds() -> None:
    settings = Settings(reconcile_after_seconds=600)
    store, gateway = SilentStore(["u-1", "u-2", "u-3"]), LookupGateway()
    tokens = iter([0.0, 0.0, 5.0])  # the API's budget runs out at the third

    def api_budget() -> float:
        return next(tokens, 0.0)

    found = Reconciler(store, FakeHanded(), lambda: gateway, Budget(), settings, api_budget)  # type: ignore[arg-type]
    assert found.look_up_silent("j1", NOW) == Lookups(2, held=True)
    assert gateway.asked == ["u-1", "u-2"] and store.rounds[0] == (NOW, "u-2")
    # The round goes on where it stopped…
    assert found.look_up_silent("j1", NOW + 1) == Lookups(1)
    assert gateway.asked[2:] == ["u-3"] and store.rounds[0] == (NOW, "")
    assert [(r.number, r.status) for r in store.reports] == [
        ("14155550101", Status.DELIVERED),
        ("14155550103", Status.DELIVERED),
    ]
    # …and the next round (u-2 still queued at Plivo) starts RECONCILE_AFTER_SECONDS after it.
    assert found.look_up_silent("j1", NOW + 300) == Lookups(0)  # (not settled: not looked at)
    assert found.look_up_silent("j1", NOW + 601) == Lookups(1) and gateway.asked[-1] == "u-2"
    # A batch handed over a moment ago is not looked up.
    fresh = SilentStore(["u-9"], since=NOW - 10)
    assert Reconciler(fresh, FakeHanded(), lambda: gateway, Budget(), settings).look_up_silent(
        "j1", NOW
    ) == Lookups(0)  # type: ignore[arg-type]


@dataclass
class UnnamedStore(SilentStore):
    """Its call's answer was lost: these numbers nothing has named."""

    unnamed: list[str] = field(default_factory=list)
    powerpack: bool = False

    def unnamed_numbers(self, job_id: str, batch: int) -> list[str]:
        named = {r.number for r in self.reports}
        return [n for n in self.unnamed if n not in named]

    def job(self, job_id: str) -> Any:
        found = job(started_at=NOW - 2000)
        return replace(found, sending=Sending("hi", None, "pp-1")) if self.powerpack else found


def sweep(found: Reconciler, calls: list[Unsettled] | None = None) -> None:
    """A sweep's lookups for job j1, then its calls weighed (and the numbers left named)."""
    found.look_up_silent("j1", NOW)
    found.settle(calls or [], [], NOW)


def test_numbers_a_lost_answer_never_named_are_asked_of_plivo_s_list() -> None:
    """Plivo's list names them: one message of ours is recorded; nothing at all since the job
    began means Plivo refused the number; another's message there proves nothing."""
    took, refused, other = "+14155550100", "+14155550101", "+14155550102"
    gateway = Gateway(
        [message(took, "u-7", at=NOW - 900), message(other, "u-8", NOW - 900, "+14155550000")]
    )
    store = UnnamedStore([], unnamed=[took, refused, other])
    for _ in range(3):  # two a sweep, rounds RECONCILE_AFTER_SECONDS apart
        sweep(reconciler(store, gateway))
        store.rounds.clear()
    assert sorted((r.number, r.status, r.error_code) for r in store.reports) == [
        (took, Status.SENT, ""),
        (refused, Status.REJECTED, "invalid_number"),
    ]
    # A Powerpack's job cannot tell its messages from others': it only learns of refusals.
    powerpack = UnnamedStore([], unnamed=[took, refused], powerpack=True)
    for _ in range(2):
        sweep(reconciler(powerpack, gateway))
        powerpack.rounds.clear()
    assert [(r.number, r.status) for r in powerpack.reports] == [(refused, Status.REJECTED)]


@dataclass
class NamingStore(UnnamedStore):
    """…beside another job's lost call."""

    numbers: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    settled: list[tuple[str, int, bool]] = field(default_factory=list)

    def call_numbers(self, job_id: str, batch: int, offset: int, size: int) -> list[str]:
        return self.numbers[(job_id, batch)]

    def listing(self, job_id: str, batch: int, call: str) -> Paging:
        return Paging()

    def remember_answer(self, job_id: str, batch: int, uuids: list[str], at: float) -> None:
        pass

    def settle_call(self, job_id: str, batch: int, *call: Any) -> str:
        found = call[2]
        self.settled.append((job_id, batch, found))
        return "submitted" if found else "resend"


def test_a_number_is_not_named_from_a_message_another_lost_call_may_have_sent() -> None:
    """Batch j1:0 was settled from evidence and Plivo refused its X (nothing of it there);
    job A's call to X lost its answer too, and its message is the one at X. Named as j1's,
    A's message was no longer A's: A was made again (X texted twice) and j1's refused X
    showed A's delivery. While a call of ours without its answer texted X, X is left."""
    x = "+14155550150"
    store = NamingStore([], unnamed=[x], numbers={("jA", 0): [x]})
    gateway = Gateway([message(x, "a-x", at=NOW - 100)])
    lost = call(job_id="jA", since=NOW - 100)
    sweep(reconciler(store, gateway), [lost])  # type: ignore[arg-type]
    assert store.reports == [] and store.settled == [("jA", 0, True)]


def test_a_message_kept_as_a_group_s_is_named_for_a_member() -> None:
    """A message kept as a group's (two lost calls, found together) may be any member's: the
    member's unnamed number is named by it (another member's own, known since, is not)."""
    shared = "+14155550100"
    handed = FakeHanded({"u-1": "j1:0,j2:0", "u-2": "j2:0"})
    gateway = Gateway([message(shared, "u-1", at=NOW - 900), message(shared, "u-2", NOW - 900)])
    store = UnnamedStore([], unnamed=[shared])
    sweep(reconciler(store, gateway, handed))
    assert [(r.number, r.uuid) for r in store.reports] == [(shared, "u-1")]


def test_a_job_with_nothing_left_to_name_needs_no_more_lookups() -> None:
    """Once every message Plivo answered with and every number is named, no lookup can name
    more (what is silent or unnamed only ever shrinks): the sweep need not come back for it."""
    named = UnnamedStore([], unnamed=[])
    assert reconciler(named, Gateway([])).look_up_silent("j1", NOW) == Lookups(0, settled=True)
    unnamed = UnnamedStore([], unnamed=["+14155550101"])
    assert not reconciler(unnamed, Gateway([])).look_up_silent("j1", NOW).settled
    silent = UnnamedStore(["u-1"], unnamed=[])
    assert reconciler(silent, LookupGateway()).look_up_silent("j1", NOW) == Lookups(1)  # type: ignore[arg-type]
    young = UnnamedStore([], since=NOW - 10, unnamed=[])  # (not looked at yet: not known)
    assert reconciler(young, Gateway([])).look_up_silent("j1", NOW) == Lookups(0)


def test_lookups_stay_within_what_the_sweep_allows_and_a_round_held_back_goes_on() -> None:
    settings = Settings(reconcile_after_seconds=600)
    store, gateway = SilentStore(["u-1", "u-3", "u-4"]), LookupGateway()
    found = Reconciler(store, FakeHanded(), lambda: gateway, Budget(), settings)  # type: ignore[arg-type]
    assert found.look_up_silent("j1", NOW, allowed=1) == Lookups(1, held=True)
    assert gateway.asked == ["u-1"] and store.rounds[0] == (NOW, "u-1")
    assert found.look_up_silent("j1", NOW + 15, allowed=0) == Lookups(0, held=True)
    assert store.rounds[0] == (NOW, "u-1") and gateway.asked == ["u-1"]
    assert found.look_up_silent("j1", NOW + 30, allowed=5) == Lookups(2)
    assert gateway.asked == ["u-1", "u-3", "u-4"] and store.rounds[0] == (NOW, "")
    # A round held back before its first lookup is not begun: the next sweep begins it.
    fresh, tokens = SilentStore(["u-7"]), iter([5.0, 0.0])
    held = Reconciler(
        fresh, FakeHanded(), lambda: gateway, Budget(), settings, lambda: next(tokens)
    )  # type: ignore[arg-type]
    assert held.look_up_silent("j1", NOW) == Lookups(0, held=True) and fresh.rounds == {}
    assert held.look_up_silent("j1", NOW + 15) == Lookups(1) and gateway.asked[-1] == "u-7"
