"""Everything bulksms keeps in Redis, and the only code that knows how: key names (`keys`), the
record layouts (`records`, `model`), the Lua scripts (`scripts`). Callers get typed objects.

    jobs         JobStore: jobs, batches, recipients, delivery reports, the sweep's view
    optouts      the opt-out set
    idempotency  remembered answers of idempotent requests
    signals      small shared facts: signature nonces taken, the sweep's lock, Plivo's bucket
"""

from bulksms.store.jobs import JobStore, KeyAnswered
from bulksms.store.keys import RATE_LIMIT_PREFIX
from bulksms.store.model import (
    BLOCKED_BY_STOP,
    COUNTED_BATCH_STATES,
    FINISHED,
    BatchRecord,
    BatchState,
    BatchWork,
    Claim,
    Guard,
    Guarded,
    Job,
    JobState,
    NewJob,
    Paging,
    Recipient,
    RecipientCounts,
    Report,
    Sending,
    Status,
    Window,
    rfc3339,
    sender_of,
)

__all__ = [
    "KeyAnswered",
    "BLOCKED_BY_STOP",
    "COUNTED_BATCH_STATES",
    "FINISHED",
    "RATE_LIMIT_PREFIX",
    "BatchRecord",
    "BatchState",
    "BatchWork",
    "Claim",
    "Guard",
    "Guarded",
    "Job",
    "JobState",
    "JobStore",
    "NewJob",
    "Paging",
    "Recipient",
    "RecipientCounts",
    "Report",
    "Sending",
    "Status",
    "Window",
    "rfc3339",
    "sender_of",
]
