"""Every Redis key bulksms uses is built here, and nowhere else.

All keys of one job carry the job's hash tag (``{job_id}``), so that a job would live in one
Redis Cluster slot; but Redis Cluster is refused at start-up (`server.CLUSTER_MESSAGE`). Each Lua
script touches one job only, but for four: an alert's submit
(`scripts.GUARDED_CREATE`: the submit limits, opt-outs and the urgent backlog too), a new job's
commit (`scripts.COMMIT`: its answer to replay, the indexes and the broker's queues), a report
(`scripts.REPORT`: a final status makes the job due to the sweep, `bulksms:active`) and a claim
(`scripts.CLAIM`: so does a worker's claim of a batch). And a
call's record is one transaction with its UUIDs' `bulksms:handed:<hour>` (`call_submitted`).

    bulksms:{<job>}:job         hash   the job: request, counters (c:<status>, b:<state>), times
    bulksms:{<job>}:batches     hash   batch number -> batch state record, and each batch's
                                       own fields (q:, d:, e:, l:, o:<batch>: `scripts`;
                                       s:<batch>: a lost call's paging through Plivo's list)
    bulksms:{<job>}:r:<batch>   string the batch's recipients: 32-byte records by number (`records`)
    bulksms:{<job>}:f:<batch>   string a template's job: the batch's recipients' values, in the
                                       records' order (`records.pack_fields`)
    bulksms:{<job>}:paced       zset   the job's batches waiting for their turn at the pace
    bulksms:{<job>}:uuids:<b>   string the message UUIDs Plivo answered the batch's calls with,
                                       16 bytes each (what to look up when no report comes)
    bulksms:{<job>}:parts       hash   <batch>:<number> -> each part's status and billed flag,
                                       for messages Plivo reports part by part
    bulksms:nonce:<nonce>       string a signature nonce taken: the digest of its request
    bulksms:idem:<digest>       string an Idempotency-Key's request digest and its answer
    bulksms:session:<digest>    hash   a campaign page session (HMAC of its id): key's print, CSRF
    bulksms:handed:<hour>       set    <job>:<batch> of the batches that handed messages over then
    bulksms:handed:found        zset   calls settled from Plivo's list (their answer, and so most
                                       of their UUIDs, lost), by when they were claimed (12 h)
    bulksms:plivo-list-bucket   hash   the token bucket for Plivo's message list (its own limit)
    bulksms:active              zset   unfinished jobs, by when the sweep is next to look at each
    bulksms:optouts             set    opted-out numbers (never expires)
    bulksms:optout-replies      hash   number -> when its last STOP/START reply was sent and the
                                       MessageUUIDs applied then (never expires, like the set)
    bulksms:scheduled           zset   scheduled jobs by send time, released by the sweep
    bulksms:jobs                zset   every job by creation time (the listing; pruned lazily)
    bulksms:plivo-bucket        hash   the token bucket shared by every worker
    bulksms:sweep-lock          string held by the worker that sweeps right now
    bulksms:{pace}:account      hash   when Plivo's queue for the account drains (`pacing`)
    bulksms:{pace}:sender:<src> hash   the same for one sender with a cap of its own
    bulksms:{pace}:due          zset   jobs with paced batches, by when their turn comes

    bulksms:rl…                 flask-limiter's counters (per API key, per address)

Celery's own keys (the broker queues) are Celery's business and use its defaults.
"""

PREFIX = "bulksms"
ACTIVE_JOBS = f"{PREFIX}:active"  # sorted set: jobs the sweep still looks after
OPT_OUTS = f"{PREFIX}:optouts"  # set: numbers (E.164 digits) never to send to; never expires
OPT_OUT_REPLIES = f"{PREFIX}:optout-replies"  # hash: the STOP/START replies applied, per number
SCHEDULED = f"{PREFIX}:scheduled"  # sorted set: scheduled jobs by their send time
JOBS = f"{PREFIX}:jobs"  # sorted set: every job by creation time, for the job listing
PLIVO_BUCKET = f"{PREFIX}:plivo-bucket"  # hash: the shared token bucket toward Plivo's API
PLIVO_LIST_BUCKET = f"{PREFIX}:plivo-list-bucket"  # hash: the same for listing messages
SWEEP_LOCK = f"{PREFIX}:sweep-lock"  # string: one sweep at a time across all workers
# sorted set: calls settled from Plivo's list, their answer lost, by when they were claimed
FOUND_BLIND = f"{PREFIX}:handed:found"
# The pace's keys share a hash tag: its scripts read several of them at once.
PACE_ACCOUNT = f"{PREFIX}:{{pace}}:account"  # hash: when Plivo's queue for the account drains
PACE_DUE = f"{PREFIX}:{{pace}}:due"  # sorted set: jobs with paced batches, by their next turn
RATE_LIMIT_PREFIX = f"{PREFIX}:rl"  # flask-limiter's counters live under this prefix


def job(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:job"


def batches(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:batches"


def recipients(job_id: str, batch: int) -> str:
    return f"{PREFIX}:{{{job_id}}}:r:{batch}"


def fields(job_id: str, batch: int) -> str:
    return f"{PREFIX}:{{{job_id}}}:f:{batch}"


def idempotency(digest: str) -> str:
    return f"{PREFIX}:idem:{digest}"


def session(digest: str) -> str:
    return f"{PREFIX}:session:{digest}"


def handed(hour: int) -> str:
    return f"{PREFIX}:handed:{hour}"


def handed_to_groups(hour: int) -> str:
    return f"{PREFIX}:handed:{hour}:groups"


def nonce(value: str) -> str:
    return f"{PREFIX}:nonce:{value}"


def paced(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:paced"


def answered(job_id: str, batch: int) -> str:
    return f"{PREFIX}:{{{job_id}}}:uuids:{batch}"


def parts(job_id: str) -> str:
    return f"{PREFIX}:{{{job_id}}}:parts"


def pace_sender(sender: str) -> str:
    return f"{PREFIX}:{{pace}}:sender:{sender}"
