"""The Lua scripts behind every state change of a job, each one atomic and of one job only
(but for an alert's submit, a new job's commit, and a report's or a claim's wake of the
sweep: `keys`).

Records (see `store` for the keys):
  recipient   32 bytes of its batch's string, sorted by number (layout in `records`). Status 0
              means "as the batch says": pending while the batch is, then queued, rejected
              (batch_failed) or cancelled with the batch's outcome. A report, Plivo refusing
              the number, or a call of part of the batch writes the recipient's own status,
              error and time.
  batch       ``pending|not_before|attempts``   waiting for a worker (not before `not_before`)
              ``sending|since|attempts``        a worker claimed it and is (or was) calling Plivo
              ``submitted|at|api_id``           Plivo accepted it
              ``failed|at|reason``              it will never be sent
              ``cancelled|at|cancelled``        the job was cancelled before it was sent
              and, for a batch sent in several calls (`model.BatchRecord`), ``resume``,
              ``calling`` and ``paced`` records carrying the batch's offset and the call's size
  batch meta  ``e:<n>``  recipients a delivery report moved while their call was not yet
                         recorded (the release before reads it as evidence that Plivo has it;
                         this one reads the call's own recipients' statuses)
              ``q:<n>``  when its task was last enqueued
              ``d:<n>``  how many times the sweep enqueued it again without it moving
              ``l:<n>``  the sweep's round of lookups in Plivo's list: its start, its cursor
              ``o:<n>``  the last 16 calls of an unfinished batch its owners recorded
                         themselves, ``;offset:attempt:since;…`` (a record written again after
                         its first answer was lost is told from a rival call's by it)

The status codes, their ranks and the statuses a finished batch implies are `model`'s tables:
each script is rendered from them (`$TABLES`, and `$queued`-style names for single codes), so they
are written once.
"""

from string import Template

from bulksms.store.model import CODES, FINAL_RANK, IMPLIED, Status, rank
from bulksms.store.records import SIZE


def _tables() -> str:
    ranks = ", ".join(f"{CODES[s]} = {rank(s)}" for s in Status)
    implied = ", ".join(f"{b.value} = '{CODES[s]}'" for b, s in IMPLIED.items())
    return (
        f"local RANK = {{{ranks}}}\n"
        f"local IMPLIED = {{{implied}}}  -- status 0, batch finished\n"
        f"local SIZE = {SIZE}"
    )


# The sweep looks at a job at its next pass, if it still looks after it (`active`, the sweep's
# index by when each job is due): due before any time, and lower than at any wake before, so
# that the sweep, which may have read the job before this wake, does not put it off
# (`LOOK_AGAIN`). Redis's clock in microseconds, made lower still where it stepped back.
WAKE = """
local function wake(active, job)
  local due = redis.call('ZSCORE', active, job)
  if not due then return end
  local clock = redis.call('TIME')
  local at = -(tonumber(clock[1]) * 1000000 + tonumber(clock[2]))
  redis.call('ZADD', active, math.min(at, tonumber(due) - 1), job)
end
"""


# A job's hash written once a script: its counts moved (`moves`: field -> by, 0 writes
# nothing; a count never written reads as 0) and `fields` set (field, value, ...), in one HSET.
# Every write a script makes goes to the append-only file as a command of its own (an HINCRBY
# with the job's key, some 90 bytes), and a Redis rewrites that file, a fork and a dump of all
# it holds, each time it doubles: the bytes an alert or a report writes set how often
# (bench/RESULTS.md, 2026-12-05).
JOB_WRITE = """
local function write_job(job, moves, fields)
  local names = {}
  for name, by in pairs(moves) do
    if by ~= 0 then names[#names + 1] = name end
  end
  if #names > 0 then
    table.sort(names)  -- (the same command for the same moves)
    local now = redis.call('HMGET', job, unpack(names))
    for i, name in ipairs(names) do
      local value = (tonumber(now[i]) or 0) + moves[name]
      -- (refused as HINCRBY refuses: a count Lua's numbers no longer hold exactly)
      if not (math.abs(value) < 2 ^ 53) then error('a count out of range: ' .. name) end
      fields[#fields + 1] = name
      fields[#fields + 1] = string.format('%d', value)
    end
  end
  if #fields > 0 then redis.call('HSET', job, unpack(fields)) end
end
"""


# A key kept at least `seconds` more: its time to live renewed only when shorter, and then by a
# minute more (the account's pace and request budget were renewed at every call, a command
# each in the append-only file).
KEEP = """
local function keep(key, seconds)
  if redis.call('TTL', key) < seconds then redis.call('EXPIRE', key, seconds + 60) end
end
"""


def _render(source: str) -> str:
    names = {status.value: f"'{code}'" for status, code in CODES.items()}
    return Template(source).substitute(
        TABLES=_tables(), FINAL=FINAL_RANK, WAKE=WAKE, JOB_WRITE=JOB_WRITE, KEEP=KEEP, **names
    )


PRELUDE = """
$TABLES
$JOB_WRITE

-- The 0-based place of `number` (a Lua number) in a batch's sorted numbers, or nil.
local function find(recipients, number)
  local low, high = 0, redis.call('STRLEN', recipients) / SIZE - 1
  while low <= high do
    local middle = math.floor((low + high) / 2)
    local at = struct.unpack('>I8', redis.call('GETRANGE', recipients, middle * 8,
                                                middle * 8 + 7))
    if at == number then return middle end
    if at < number then low = middle + 1 else high = middle - 1 end
  end
  return nil
end

-- Redis's own clock, as the caller's `now` is formatted: a call's start and its age are read
-- by other hosts, whose clocks may differ from the claimer's.
local function redis_now()
  local clock = redis.call('TIME')
  return string.format('%.3f', tonumber(clock[1]) + tonumber(clock[2]) / 1000000)
end

-- A batch record's fields: state, time, attempts (or detail), offset, size.
local function split(record)
  local out = {}
  for part in string.gmatch(record .. '|', '([^|]*)|') do out[#out + 1] = part end
  return out
end

local function offset_of(f) return tonumber(f[4] or '0') or 0 end
local function size_of(f) return tonumber(f[5] or '0') or 0 end

-- State names. The release before paced calls knows `pending` and `sending` records without an
-- offset, and would send a whole batch again on seeing one with an offset; so a batch waiting
-- at an offset (or to repeat a lost call as it was) is `resume`, a call of part of a batch is
-- `calling`, and a batch waiting for its turn at the pace is `paced`: names it leaves alone.
local function waiting(state) return state == 'pending' or state == 'resume' end
local function calling(state) return state == 'sending' or state == 'calling' end
local function unfinished(state) return waiting(state) or calling(state) or state == 'paced' end

-- Whether the call in flight is the one claimed as `attempt` at `offset` (strings from ARGV),
-- at `since` ('' or nil: not known). A Redis that lost a claim (writes not durable, a failover)
-- gives the next claim the same attempt number, not the same time.
local function owns(f, attempt, offset, since)
  local at = tonumber(f[2])  -- (a record without a time is not told apart by it)
  return calling(f[1]) and f[3] == attempt and offset_of(f) == tonumber(offset)
         and (since == nil or since == '' or not at or at == tonumber(since))
end

local function pending_record(not_before, attempts, offset, size)
  if offset == 0 and size == 0 then return 'pending|' .. not_before .. '|' .. attempts end
  return 'resume|' .. not_before .. '|' .. attempts .. '|' .. offset .. '|' .. size
end

local function sending_record(since, attempt, offset, size, count)
  if offset == 0 and (size == 0 or size >= count) then
    return 'sending|' .. since .. '|' .. attempt
  end
  return 'calling|' .. since .. '|' .. attempt .. '|' .. offset .. '|' .. size
end

-- Whether a report moved a recipient in [from, to): any status of its own but `suppressed`
-- (left out of the call before it was made). Evidence that a call made before reached Plivo.
local function reported(recipients, count, from, to)
  if to <= from then return false end
  local states = redis.call('GETRANGE', recipients, count * 8 + from * 24, count * 8 + to * 24 - 1)
  for i = 0, to - from - 1 do
    local code = string.byte(states, i * 24 + 17)
    if code ~= 0 and code ~= string.byte($suppressed) then return true end
  end
  return false
end

-- How many recipients in [from, to) still have status 0 (pending, as their batch says).
local function unmoved(recipients, count, from, to)
  if to <= from then return 0 end
  local states = redis.call('GETRANGE', recipients, count * 8 + from * 24, count * 8 + to * 24 - 1)
  local found = 0
  for i = 0, to - from - 1 do
    if string.byte(states, i * 24 + 17) == 0 then found = found + 1 end
  end
  return found
end

-- `moves[field]` moved by `by` (for `write_job`).
local function move(moves, field, by)
  moves[field] = (moves[field] or 0) + by
end

-- A job's times for something done at `now`, as fields for one HSET: `last` always, `first`
-- unless it is set already.
local function times(job, now, last, first)
  local fields = {last, now}
  if redis.call('HEXISTS', job, first) == 0 then fields[3], fields[4] = first, now end
  return fields
end

-- A batch is done: submitted, failed or cancelled. Its recipients still pending from `offset` on
-- take `code` (status 0 says so from now on; those before `offset` were handed over by earlier
-- calls and carry their own status); those in `refused` (Plivo's invalid_number) get
-- `refused_tail`. `stamps` and `moves`: more of the job's fields to set and counts to move in
-- the same write (`write_job`), or nil.
local function finish(job, batches, recipients, n, now, outcome, detail, code, refused,
                      refused_tail, offset, stamps, moves)
  redis.call('HSET', batches, n, outcome .. '|' .. now .. '|' .. detail)
  redis.call('HDEL', batches, 'o:' .. n)  -- (CALL answers 'done' for a finished batch)
  moves = moves or {}
  move(moves, 'b:pending', -1)
  move(moves, 'b:' .. outcome, 1)
  local fields = stamps or {}
  fields[#fields + 1], fields[#fields + 2] = 'updated_at', now
  if (tonumber(redis.call('HGET', job, 'b:pending')) or 0) + moves['b:pending'] == 0 then
    fields[#fields + 1], fields[#fields + 2] = 'sent_at', now
  end
  local count = redis.call('STRLEN', recipients) / SIZE
  local rejected = 0
  for _, number in ipairs(refused) do
    local at = find(recipients, tonumber(number))
    local status = at and count * 8 + at * 24 + 16  -- (its status byte: see `records`)
    if at and at >= offset and redis.call('GETRANGE', recipients, status, status) == '\\0' then
      redis.call('SETRANGE', recipients, status, refused_tail)
      rejected = rejected + 1
    end
  end
  local pending = unmoved(recipients, count, offset, count)
  move(moves, 'c:' .. $pending, 0 - (pending + rejected))
  move(moves, 'c:' .. $rejected, rejected)
  move(moves, 'c:' .. code, pending)
  write_job(job, moves, fields)
end

-- One call of a batch reached Plivo: numbers[offset, offset + size) of the record `f`. A call
-- of the whole batch finishes it as before (no recipient written: status 0 says queued); a
-- call of part of it writes each of its recipients still pending as queued (or rejected, if
-- Plivo refused the number), and the batch waits at its next offset, or is submitted.
local function record_call(job, batches, recipients, n, now, f, api_id, refused, refused_tail,
                           queued_tail)
  local count = redis.call('STRLEN', recipients) / SIZE
  local offset, size = offset_of(f), size_of(f)
  if size <= 0 or offset + size > count then size = count - offset end
  local moves, stamps = {handed = size}, times(job, now, 'last_handed_at', 'first_handed_at')
  if offset == 0 and size == count then
    finish(job, batches, recipients, n, now, 'submitted', api_id, $queued, refused,
           refused_tail, 0, stamps, moves)
    return 'submitted'
  end
  local refused_at = {}
  for _, number in ipairs(refused) do
    local at = find(recipients, tonumber(number))
    if at then refused_at[at] = true end
  end
  local base = count * 8 + offset * 24
  local states = redis.call('GETRANGE', recipients, base, base + size * 24 - 1)
  local queued, rejected = 0, 0
  for i = 0, size - 1 do
    if string.byte(states, i * 24 + 17) == 0 then
      local tail = queued_tail
      if refused_at[offset + i] then
        tail, rejected = refused_tail, rejected + 1
      else
        queued = queued + 1
      end
      redis.call('SETRANGE', recipients, base + i * 24 + 16, tail)
    end
  end
  move(moves, 'c:' .. $pending, 0 - (queued + rejected))
  move(moves, 'c:' .. $queued, queued)
  move(moves, 'c:' .. $rejected, rejected)
  redis.call('HDEL', batches, 'e:' .. n)  -- (the release before reads it as this call's)
  redis.call('HDEL', batches, 'd:' .. n)  -- it moves: the sweep's patience starts afresh
  if offset + size >= count then
    finish(job, batches, recipients, n, now, 'submitted', api_id, $queued, {}, '', count,
           stamps, moves)
    return 'submitted'
  end
  redis.call('HSET', batches, n, pending_record(0, 0, offset + size, 0))
  stamps[#stamps + 1], stamps[#stamps + 2] = 'updated_at', now
  write_job(job, moves, stamps)
  return 'advanced'
end

-- A call in flight settled by evidence: a report moved one of its own recipients, so Plivo has
-- it. The call is recorded (its outcome returned); nil without evidence.
local function from_reports(job, batches, recipients, n, now, f, queued_tail)
  local count = redis.call('STRLEN', recipients) / SIZE
  local offset, size = offset_of(f), size_of(f)
  if size <= 0 or offset + size > count then size = count - offset end
  if reported(recipients, count, offset, offset + size) then
    return record_call(job, batches, recipients, n, now, f, 'inferred from delivery reports',
                       {}, '', queued_tail)
  end
  return nil
end
"""

# KEYS: job, batches, recipients, the active jobs. ARGV: batch, now, offset, size, the queued
# tail, the job's id. {'go', attempt, size, since} when this caller may send
# numbers[offset, offset + size) now (a call made before at this offset is repeated as it was:
# its size wins); otherwise why not: 'moved' with the batch's offset when another call got
# there first, or when a report shows that the call made before reached Plivo after all (it is
# recorded, never repeated). Any claim of a waiting batch makes its job due for the sweep.
CLAIM = _render(
    PRELUDE
    + """
$WAKE
ARGV[2] = redis_now()  -- Redis's clock: every host compares the same times
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return {'gone'} end
local f = split(rec)
if not waiting(f[1]) and f[1] ~= 'paced' then
  return {calling(f[1]) and 'sending' or f[1]}
end
local offset = offset_of(f)
-- The sweep looks at the job next: a job all waiting for workers is left until a batch could
-- be due (`sweep._due`), and this call may die with its worker.
wake(KEYS[4], ARGV[6])
local flags = redis.call('HMGET', KEYS[1], 'halted', 'cancelled', 'paused')
if flags[1] then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], 'failed', flags[1], $rejected, {}, '',
         offset)
  return {'halted', flags[1]}
end
if flags[2] then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], 'cancelled', 'cancelled', $cancelled, {},
         '', offset)
  return {'cancelled'}
end
if flags[3] then return {'paused'} end
-- (a second of slack for clocks that differ between hosts)
if waiting(f[1]) and tonumber(f[2] or '0') > tonumber(ARGV[2]) + 1 then
  return {'early', string.format('%.3f', tonumber(f[2]) - tonumber(ARGV[2]))}  -- how long
end
if offset ~= tonumber(ARGV[3]) then return {'moved', tostring(offset)} end
local count = redis.call('STRLEN', KEYS[3]) / SIZE
local size = tonumber(ARGV[4])
if tonumber(f[3] or '0') > 0 then
  -- A call was made at this offset before (resent after the grace, or not sent at all): a
  -- report for any recipient it may have held means it reached Plivo after all. (A record
  -- without its size is the release before's: its call was the whole rest of the batch.)
  local span = size_of(f)
  if span <= 0 or offset + span > count then span = count - offset end
  if reported(KEYS[3], count, offset, offset + span) then
    local made = {f[1], f[2], f[3], tostring(offset), tostring(span)}
    local outcome = record_call(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], made,
                                'inferred from delivery reports', {}, '', ARGV[5])
    if outcome == 'submitted' then return {'submitted'} end
    return {'moved', tostring(offset + span)}
  end
  if size_of(f) > 0 then size = size_of(f) end
end
local attempt = tostring(tonumber(f[3] or '0') + 1)
redis.call('HSET', KEYS[2], ARGV[1], sending_record(ARGV[2], attempt, offset, size, count))
redis.call('HSET', KEYS[1], unpack(times(KEYS[1], ARGV[2], 'updated_at', 'started_at')))
return {'go', attempt, tostring(size), ARGV[2]}
"""
)

# KEYS: batches. ARGV: batch, attempt, offset, delay (seconds, counted on Redis's clock: the
# worker's may be off), the claim's since. Nothing reached Plivo: the call's owner puts the
# batch back, not to be sent before then. (Its attempt stays counted, even when no call was
# made: an attempt number is never given twice, or a stale verdict on the old claim could pass
# for the new one's.)
RELEASE = _render(
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local f = split(rec)
if not owns(f, ARGV[2], ARGV[3], ARGV[5]) then return 0 end
local attempts = tonumber(f[3] or '0')
local not_before = string.format('%.3f', tonumber(redis_now()) + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], ARGV[1], pending_record(not_before, attempts, offset_of(f),
                                                    size_of(f)))
return 1
"""
)

# KEYS: batches, paced. ARGV: batch, resume_at, offset, retention seconds. The batch waits for
# its turn at the pace: `paced` (a lost call to repeat keeps its size), and listed in its job's
# paced set (woken one at a time).
PARK = _render(
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local f = split(rec)
if (not waiting(f[1]) and f[1] ~= 'paced') or offset_of(f) ~= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'paced|' .. ARGV[2] .. '|' .. (f[3] or '0') .. '|'
           .. offset_of(f) .. '|' .. size_of(f))
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""
)

# KEYS: paced, batches. The job's lowest paced batch, taken off its paced set and marked
# enqueued now (Redis's clock) in the same step: from then its task is on its way, and the sweep
# must not take it for a batch whose turn was lost (DISPATCH_STALE_SECONDS). nil if none.
NEXT_PACED = _render(
    """
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then return false end
if redis.call('HEXISTS', KEYS[2], popped[1]) == 1 then  -- (a job expired: no key without a TTL)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  redis.call('HSET', KEYS[2], 'q:' .. popped[1], string.format('%.3f', now))
end
return popped[1]
"""
)

# KEYS: job, batches, recipients. ARGV: batch, attempt, offset, the suppressed tail, the claim's
# since, then the numbers (digits) that opted out. The call claimed as `attempt` at `offset` (at
# `since`) leaves them out: those of its recipients still pending take the tail. 1, or 0 if the
# call is not the caller's.
SUPPRESS = _render(
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 0 end
local f = split(rec)
if not owns(f, ARGV[2], ARGV[3], ARGV[5]) then return 0 end
local count = redis.call('STRLEN', KEYS[3]) / SIZE
local offset, size = offset_of(f), size_of(f)
if size <= 0 or offset + size > count then size = count - offset end
local left = 0
for i = 6, #ARGV do
  local at = find(KEYS[3], tonumber(ARGV[i]))
  local status = at and count * 8 + at * 24 + 16
  if at and at >= offset and at < offset + size
     and redis.call('GETRANGE', KEYS[3], status, status) == '\\0' then
    redis.call('SETRANGE', KEYS[3], status, ARGV[4])
    left = left + 1
  end
end
local moves = {}
move(moves, 'c:' .. $pending, 0 - left)
move(moves, 'c:' .. $suppressed, left)
write_job(KEYS[1], moves, {})
return 1
"""
)

# KEYS: job, batches, recipients. ARGV: batch, now, attempt, offset, api_id, the refused
# numbers' tail, the queued tail (status, no error, time), the claim's `since` (as CLAIM gave it;
# '' if unknown), then the refused numbers (digits).
# 'submitted' (the batch is done), 'advanced' (waiting at its next offset, or recorded already
# by this caller: its first answer was lost on the way back), 'done' (the batch is finished),
# 'superseded' (the call is not this caller's: another attempt owns the batch, or recorded this
# offset, and Plivo may have both calls).
# A claim is known by its offset, attempt and `since` (Redis's clock at the claim): a Redis that
# lost a claim (no durable writes, a failover) gives the next claim the same attempt number, not
# the same time. Only the owner's own record names its claim (`o:<n>`): a call settled from
# reports or from Plivo's list may have been an earlier attempt's, whose late answer must still
# say so.
CALL = _render(
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 'done' end
local f = split(rec)
if not unfinished(f[1]) then return 'done' end
local recorded = 'o:' .. ARGV[1]
if not owns(f, ARGV[3], ARGV[4], ARGV[8]) then
  local made = redis.call('HGET', KEYS[2], recorded) or ''
  local claim = ';' .. ARGV[4] .. ':' .. ARGV[3] .. ':' .. ARGV[8] .. ';'
  if ARGV[8] ~= '' and string.find(made, claim, 1, true) then return 'advanced' end
  return 'superseded'
end
ARGV[2] = redis_now()  -- the call's time, read against Redis's clock by every host
local refused = {}
for i = 9, #ARGV do refused[#refused + 1] = ARGV[i] end
local outcome = record_call(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], f, ARGV[5], refused,
                            ARGV[6], ARGV[7])
if outcome == 'advanced' then
  local made = (redis.call('HGET', KEYS[2], recorded) or ';')
               .. offset_of(f) .. ':' .. f[3] .. ':' .. f[2] .. ';'
  -- The last 16 only: a record is written again moments after its answer was lost, and a batch
  -- of one call a number would make this long. (One forgotten: a false 'superseded'.)
  local _, marks = string.gsub(made, ';', ';')
  for _ = 18, marks do made = string.gsub(made, '^;[^;]*', '', 1) end
  redis.call('HSET', KEYS[2], recorded, made)
end
return outcome
"""
)

# KEYS: job, batches, recipients, the active jobs. ARGV: batch, now, outcome, detail, code,
# then the owner's attempt, offset and since (or '*', '*' and '': whoever owns it), the job's
# id. 1 done, 0 already done, -1 the call is not the caller's. The sweep looks at the job next
# (its last batch may have ended it): a batch failed without a claim (its values gone) has
# woken nothing else, and a new job is first due only when a batch could be stale.
FINISH = _render(
    PRELUDE
    + """
$WAKE
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 0 end
local f = split(rec)
if not unfinished(f[1]) then return 0 end
if ARGV[6] ~= '*' and not owns(f, ARGV[6], ARGV[7], ARGV[8]) then return -1 end
ARGV[2] = redis_now()  -- (as CALL)
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], {}, '',
       offset_of(f))
wake(KEYS[4], ARGV[9])
return 1
"""
)

# KEYS: job, batches, recipients. ARGV: batch, now, in_flight_seconds, the queued tail. A call
# left in flight (its worker died, or the answer never came): settled from evidence, a report
# that moved one of the call's own recipients — recorded as handed over ('submitted' or
# 'advanced'); without any, 'ask': only Plivo can say whether it took the call (`SETTLE`).
RESOLVE = _render(
    PRELUDE
    + """
ARGV[2] = redis_now()  -- Redis's clock: every host compares the same times
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 'gone' end
local f = split(rec)
if not calling(f[1]) then return f[1] end
local age = tonumber(ARGV[2]) - tonumber(f[2])
if age < tonumber(ARGV[3]) then return 'in_flight' end
return from_reports(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], f, ARGV[4]) or 'ask'
"""
)

# KEYS: job, batches, recipients. ARGV: batch, now, attempt, offset, 'found' or 'absent' (what
# Plivo's message list says of the call claimed as `attempt` at `offset`), the queued tail, the
# claim's since (as the sweep read it).
# Found: recorded as handed over. Absent: pending again at the same offset, so the very same call
# is made again ('resend') — unless a report came meanwhile. 'moved' when the call is not in
# flight any more (settled by someone else).
SETTLE = _render(
    PRELUDE
    + """
ARGV[2] = redis_now()  -- Redis's clock: every host compares the same times
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 'gone' end
local f = split(rec)
if not owns(f, ARGV[3], ARGV[4], ARGV[7]) then return 'moved' end
local inferred = from_reports(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], f, ARGV[6])
if inferred then return inferred end
if ARGV[5] == 'found' then
  return record_call(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], f,
                     "found in Plivo's message list", {}, '', ARGV[6])
end
redis.call('HSET', KEYS[2], ARGV[1], pending_record(0, f[3], offset_of(f), size_of(f)))
return 'resend'
"""
)

# KEYS: job, recipients, batches, parts, active jobs, opt-outs, opt-out replies. ARGV: number
# (digits), code, uuid (16 bytes, or '' to keep what is there), tail (status, error, time), now,
# batch, units, amount (in 1/100000), for a report of one part of a long message, the part and the
# parts in all ('' otherwise), the job, and '1' for a report blocked by STOP ('' otherwise).
# 1 moved (2: from pending, before its call was recorded), 0 old news, -1 no such recipient.
# A report blocked by STOP opts its recipient out when it moves it, so once: old news (Plivo's
# retry, or a captured report posted again) changes nothing, not even after the person's START or
# an operator's opt-in; nor does a report whose call was made before the last STOP or START the
# person sent (their later word wins).
# What Plivo billed is added once per message part,
# from the first report that carries a charge, whatever its status (Plivo charges at `sent`, and
# many carriers never send more), else from its first final report. A single message keeps its
# flag in the record's spare byte; a message reported in parts keeps each part's status and flag
# in the parts hash, and its status is folded from them: delivered when every part is, failed
# or undelivered as soon as a part is.
# Every report runs this: it makes few calls into Redis (a read of the batch's numbers, searched
# here, and one write of the record).
REPORT = _render(
    """
$TABLES
$WAKE
$JOB_WRITE
local count = redis.call('STRLEN', KEYS[2]) / SIZE
if count == 0 then return -1 end
local number = tonumber(ARGV[1])
local all = redis.call('GETRANGE', KEYS[2], 0, count * 8 - 1)  -- the numbers: a quarter
local low, high, at = 0, count - 1, nil
while low <= high do
  local middle = math.floor((low + high) / 2)
  local found = struct.unpack('>I8', all, middle * 8 + 1)
  if found == number then at = middle break end
  if found < number then low = middle + 1 else high = middle - 1 end
end
if not at then return -1 end
local base = count * 8 + at * 24  -- its state: UUID, then status, error, time, billed
local own = redis.call('GETRANGE', KEYS[2], base + 16, base + 16)
local old = own
if own == '\0' then
  local batch = redis.call('HGET', KEYS[3], ARGV[6]) or ''
  old = IMPLIED[string.match(batch, '^([^|]*)')] or $pending
end
local code, tail = ARGV[2], ARGV[4]
-- Billed at the first report that carries a charge, else at the first final one.
local billable = tonumber(ARGV[8]) > 0 or (RANK[code] >= $FINAL and tonumber(ARGV[7]) > 0)
local bill = false
local part, parts = tonumber(ARGV[9]), tonumber(ARGV[10])
if parts and part and parts > 1 and part >= 1 and part <= parts then
  local field = ARGV[6] .. ':' .. ARGV[1]
  local state = redis.call('HGET', KEYS[4], field)
  -- Another count of parts than the message's first part report gave is not Plivo's (a
  -- message's parts keep their count): taken, it would start the parts afresh, billed again.
  if state and #state ~= 2 * parts then return 0 end
  state = state or string.rep($pending, parts) .. string.rep('0', parts)
  local mine = string.sub(state, part, part)
  if RANK[code] > RANK[mine] then
    state = string.sub(state, 1, part - 1) .. code .. string.sub(state, part + 1)
  end
  if billable and string.sub(state, parts + part, parts + part) == '0' then
    state = string.sub(state, 1, parts + part - 1) .. '1' .. string.sub(state, parts + part + 1)
    -- Billed whole (a report without its part came first) or by its parts, never both.
    if redis.call('GETRANGE', KEYS[2], base + 23, base + 23) ~= '\1' then
      bill = true
      redis.call('SETRANGE', KEYS[2], base + 23, '\2')
    end
  end
  redis.call('HSET', KEYS[4], field, state)
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[4], ttl) end
  -- The message's status: a failed part's report moves it at once (its code is the report's);
  -- otherwise it is folded from every part's.
  if RANK[code] < $FINAL or code == $delivered then
    local delivered, sent = true, false
    for i = 1, parts do
      local each = string.sub(state, i, i)
      if each ~= $delivered then delivered = false end
      if RANK[each] >= RANK[$sent] then sent = true end
    end
    code = delivered and $delivered or (sent and $sent or $queued)
    tail = code .. string.sub(tail, 2)
  end
elseif billable then
  -- A single message: billed once (not if billed by its parts: flag 2). A record the release
  -- before finished was billed then.
  local flag = redis.call('GETRANGE', KEYS[2], base + 23, base + 23)
  if flag == '\0' and RANK[old] < $FINAL then
    bill = true
    redis.call('SETRANGE', KEYS[2], base + 23, '\1')
  end
end
local moves = {}
if bill then
  moves['billed_units'], moves['billed_amount_e5'] = tonumber(ARGV[7]), tonumber(ARGV[8])
end
if RANK[code] <= RANK[old] then
  write_job(KEYS[1], moves, {})
  return 0
end
-- Pending until now: Plivo has the batch, whatever the worker recorded (or not) so far.
local moved = 1
if old == $pending then
  redis.call('HINCRBY', KEYS[3], 'e:' .. ARGV[6], 1)
  moved = 2  -- (the caller keeps its UUID: the call's answer may never be recorded)
end
-- Blocked by STOP: when the recipient's call was made, for the person's later word to win. Its
-- record's time (written when its call was recorded, or by a report since), else, not written
-- yet, its batch's (the claim of the call in flight; 0 or none: unknown).
local blocked, made = ARGV[12] == '1', nil
if blocked and own ~= '\0' then
  made = struct.unpack('>I4', redis.call('GETRANGE', KEYS[2], base + 19, base + 22))
elseif blocked then
  made = tonumber(string.match(redis.call('HGET', KEYS[3], ARGV[6]) or '', '^[^|]*|([^|]*)'))
end
if ARGV[3] ~= '' then
  redis.call('SETRANGE', KEYS[2], base, ARGV[3] .. tail)
else
  redis.call('SETRANGE', KEYS[2], base + 16, tail)
end
moves['c:' .. old], moves['c:' .. code] = -1, 1
write_job(KEYS[1], moves, {'updated_at', ARGV[5]})
-- A final status may be the job's last: the sweep looks at it next (to notify, and forget it).
if RANK[code] >= $FINAL then wake(KEYS[5], ARGV[11]) end
if blocked then
  local replied = tonumber(string.match(redis.call('HGET', KEYS[7], ARGV[1]) or '', '^([^|]*)'))
  -- (a record's time is in whole seconds: a reply in the call's own second is not after it)
  if not (replied and made and made > 0 and replied >= made + 1) then
    redis.call('SADD', KEYS[6], ARGV[1])
  end
end
return moved
"""
)

# The sweep looks at a job (ARGV[1]) at its next pass (KEYS[1], the active jobs), as a final
# report makes it (`WAKE`).
LOOK_NOW = _render(
    """
$WAKE
wake(KEYS[1], ARGV[1])
return 0
"""
)

# The sweep's next look at each job (KEYS[1], the active jobs), as triples of ARGV: the job, its
# due time as the sweep read it, its next. Where the time moved since (a final report or a
# cancel made the job due at once, each to a time lower than any before), it stays.
LOOK_AGAIN = """
for i = 1, #ARGV, 3 do
  local due = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if due and tonumber(due) == tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 2], ARGV[i])
  end
end
return 0
"""

# A field of a job's batches hash (KEYS[1]) set to ARGV[2] (ARGV[1]), only while the job is
# there: the sweep's notes on a job erased meanwhile would make a hash nothing expires.
SET_IF_KEPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
"""

# KEYS: a signature nonce's record. ARGV: the digest of the request it came with, seconds to
# keep it (0: for good). 1 when the nonce is new (now bound to that request) or comes again
# with the very same request before that request was settled (Plivo retrying what we did not
# answer), else 0.
NONCE_BIND = """
local bound = redis.call('GET', KEYS[1])
if not bound then
  if ARGV[2] == '0' then
    redis.call('SET', KEYS[1], ARGV[1])
  else
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  end
  return 1
end
if bound == ARGV[1] then return 1 end
return 0
"""

# KEYS: the opt-out set, the replies record (number -> "<time>|<uuid>,<uuid>..": the time of the
# last STOP or START applied for the number and the messages applied at that time). ARGV: the
# number, 1 to opt out or 0 back in, the reply's time (Plivo's MessageTime, epoch seconds; ''
# when unknown), its MessageUUID ('' when none) and how many UUIDs to keep at one time (replies
# without a time all share one, and would pile up: the oldest go first). Replies apply in the
# order their sender sent them, each once: 1 applied, 0 this very message again, -1 older than
# one applied.
OPT_OUT_REPLY = """
local record = redis.call('HGET', KEYS[2], ARGV[1])
local at, seen = '', ''
if record then
  local bar = string.find(record, '|', 1, true)
  at, seen = string.sub(record, 1, bar - 1), string.sub(record, bar + 1)
end
if ARGV[4] ~= '' and string.find(',' .. seen .. ',', ',' .. ARGV[4] .. ',', 1, true) then
  return 0
end
if ARGV[3] ~= '' then
  if at ~= '' and tonumber(ARGV[3]) < tonumber(at) then return -1 end
  if at == '' or tonumber(ARGV[3]) > tonumber(at) then seen = '' end
  at = ARGV[3]
end
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[1], ARGV[1])
else
  redis.call('SREM', KEYS[1], ARGV[1])
end
if ARGV[4] ~= '' then
  if seen == '' then seen = ARGV[4] else seen = seen .. ',' .. ARGV[4] end
  local _, commas = string.gsub(seen, ',', ',')
  local drop, cut = commas + 1 - tonumber(ARGV[5]), 0
  if drop > 0 then  -- (one copy, however many go: a record may hold many from before)
    for _ = 1, drop do cut = string.find(seen, ',', cut + 1, true) end
    seen = string.sub(seen, cut + 1)
  end
end
redis.call('HSET', KEYS[2], ARGV[1], at .. '|' .. seen)
return 1
"""

# KEYS: bucket. ARGV: capacity, refill per second, and seconds to hold it (0: take a token). 0
# when a token was taken, else the seconds to wait for one. Held (Plivo answered 429 with
# Retry-After), it is empty until then and nothing is taken. Redis's own clock, so every worker
# on every host shares one bucket.
BUCKET_TAKE = _render(
    """
$KEEP
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local capacity, rate, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3] or 0)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or t
tokens = math.min(capacity, tokens + math.max(0, t - at) * rate)
local wait = 0
if hold > 0 then
  tokens = math.min(tokens, 1 - hold * rate)
  wait = hold
elseif tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(t))
-- (until it is full again: a hold outlives the takes during it)
keep(KEYS[1], math.ceil((capacity - tokens) / rate) + 60)
return tostring(wait)
"""
)

# KEYS: the account's pace, the pace's schedule, then the sender's pace (if it has a cap).
# ARGV: segments, bound (seconds of the pace that may wait at Plivo), the asking job, then the
# account's rate and the sender's (segments a second). Each pace keeps `free`: when Plivo's queue
# for it will have drained, on Redis's own clock; the account's also keeps `last`, the job that
# took the last room. {'1', backlog, now, waiting} when the call may go now (its segments are
# counted), else {'0', wait, now, waiting, last}: seconds until the queue is down to half the
# bound (room for a turn of calls, not just one), `waiting` the jobs on the schedule, `last` 1
# if this job took the last room (it then lets the others go first). A call into an empty
# queue always fits.
PACE_TAKE = _render(
    """
$KEEP
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local segments, bound = tonumber(ARGV[1]), tonumber(ARGV[2])
local paces = {KEYS[1], KEYS[3]}
local after, wait = {}, 0
for i, key in ipairs(paces) do
  local free = tonumber(redis.call('HGET', key, 'free') or '0') or 0
  if free < now then free = now end
  after[i] = free + segments / tonumber(ARGV[3 + i])
  if free > now and after[i] - now > bound then
    wait = math.max(wait, after[i] - now - bound, free - now - bound / 2)
  end
end
local waiting = redis.call('ZCARD', KEYS[2])
if wait > 0 then
  local last = redis.call('HGET', KEYS[1], 'last') == ARGV[3] and 1 or 0
  return {'0', tostring(wait), tostring(now), waiting, last}
end
for i, key in ipairs(paces) do
  if i == 1 then  -- (the account's: one write, not two)
    redis.call('HSET', key, 'free', tostring(after[i]), 'last', ARGV[3])
  else
    redis.call('HSET', key, 'free', tostring(after[i]))
  end
  keep(key, math.ceil(after[i] - now) + 60)
end
return {'1', tostring(after[1] - now), tostring(now), waiting}
"""
)

# KEYS: the account's pace, the pacer's schedule. ARGV: a job id. {seconds of the pace waiting
# at Plivo now, now, jobs waiting for a turn, 1 if the job is one of them}.
PACE_VIEW = _render(
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local free = tonumber(redis.call('HGET', KEYS[1], 'free') or '0') or 0
local waiting = redis.call('ZCARD', KEYS[2])
local listed = redis.call('ZSCORE', KEYS[2], ARGV[1]) and 1 or 0
return {tostring(math.max(0, free - now)), tostring(now), waiting, listed}
"""
)

# The urgent lane's backlog is kept as one moment in the account's pace hash, `urgent`: when the
# urgent work accepted so far will have been handed to Plivo at the pace. A new urgent job of
# `seconds` at the pace is refused beyond `bound` seconds of backlog (0: no bound): (0, seconds
# until the backlog is back within it); else it is counted: (1, the backlog ahead of it). On
# Redis's clock, as the pace is.
_TAKE_URGENT = """
local function take_urgent(pace, seconds, bound)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  local free = math.max(now, tonumber(redis.call('HGET', pace, 'urgent') or '0') or 0)
  local ahead = free - now
  if bound > 0 and ahead > bound then
    return 0, ahead - bound
  end
  redis.call('HSET', pace, 'urgent', tostring(free + seconds))
  return 1, ahead
end
"""

# KEYS: the account's pace hash. ARGV: seconds of the account's pace a new urgent job takes, the
# bound. {taken, seconds} as `take_urgent` says.
URGENT_TAKE = (
    _TAKE_URGENT
    + """
local taken, seconds = take_urgent(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return {taken, tostring(seconds)}
"""
)

# KEYS: the account's pace hash. ARGV: seconds an urgent job took (`URGENT_TAKE`) and then was
# not kept: taken off the backlog, but not into the past.
URGENT_GIVE_BACK = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local free = tonumber(redis.call('HGET', KEYS[1], 'urgent') or '0') or 0
if free > now then
  redis.call('HSET', KEYS[1], 'urgent', tostring(math.max(now, free - tonumber(ARGV[1]))))
end
return 1
"""

# A new job's writes, passed to a script as words (`JobStore._writes`: from ARGV[from] on, each
# its number of words and the words), run in order. One score is not a number: a plain ZADD's
# (key, score, member) `now+<seconds>` is that many seconds past Redis's clock (when the sweep
# first looks at a job whose tasks went out with it, `JobStore`'s `first_look_seconds`: on the
# clock every host's sweep compares with, whatever the clock of the host that made the job).
# Redis refuses such a score in a ZADD of its own: run anywhere else, the write fails rather
# than index the job wrongly.
RUN_WRITES = """
local function run_writes(from)
  local i = from
  while i <= #ARGV do
    local words = tonumber(ARGV[i])
    if words == 4 and ARGV[i + 1] == 'ZADD' and string.sub(ARGV[i + 3], 1, 4) == 'now+' then
      local clock = redis.call('TIME')
      local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
      ARGV[i + 3] = string.format('%.6f', now + tonumber(string.sub(ARGV[i + 3], 5)))
    end
    redis.call(unpack(ARGV, i + 1, i + words))
    i = i + words + 1
  end
end
"""

# A small job (an alert) made in one round trip, its checks first, in the order the general
# path makes them (`bulksms.api.jobs`): its submit limits counted, its valid numbers looked up
# in the opt-out set, its urgent backlog taken; then the job's own writes (`JobStore.create`'s,
# passed in as they are: the store builds them once for both paths). A check that fails ends
# the script before anything of the job is written.
# KEYS: the opt-out set, the account's pace hash, then each submit limit's moving window (the
# limits library's list, in its own layout: entries are times, newest first, trimmed to the
# limit). ARGV: the time (the caller's clock, as that library counts), the job's seconds at the
# account's pace ('' if it is not urgent), the urgent bound, each limit's amount and expiry,
# the count of numbers to look up and the numbers (every valid one, without '+'), then the
# writes, each its length and its words. {'created', backlog ahead} | {'limited', which limit
# (1-based)} | {'opted_out'} | {'backlog', seconds until the urgent backlog is back within the
# bound}.
GUARDED_CREATE = (
    _TAKE_URGENT
    + RUN_WRITES
    + """
local limits = #KEYS - 2
local now = tonumber(ARGV[1])
for l = 1, limits do
  local window, amount, expiry = KEYS[2 + l], tonumber(ARGV[2 + 2 * l]), tonumber(ARGV[3 + 2 * l])
  local entry = redis.call('LINDEX', window, amount - 1)
  if entry and tonumber(entry) >= now - expiry then return {'limited', l} end
  redis.call('LPUSH', window, ARGV[1])
  redis.call('LTRIM', window, 0, amount - 1)
  redis.call('EXPIRE', window, expiry)
end
local at = 4 + 2 * limits
local count = tonumber(ARGV[at])
if count > 0 then
  for _, flag in ipairs(redis.call('SMISMEMBER', KEYS[1], unpack(ARGV, at + 1, at + count))) do
    if flag == 1 then return {'opted_out'} end
  end
end
local ahead = 0
if ARGV[2] ~= '' then
  local taken, seconds = take_urgent(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
  if taken == 0 then return {'backlog', tostring(seconds)} end
  ahead = seconds
end
run_writes(at + count + 1)
return {'created', tostring(ahead)}
"""
)

# KEYS: the keys a new job's data made (`JobStore.create`). ARGV: a guard's key ('' for none) and
# what it may hold: nothing, or a value that starts so; then commands, each as its number of
# words and the words, run only if every one of those keys is there and the guard holds: 1; else
# 0 (a key missing) or -1 (the guard's key holds something else), those keys deleted (allowed
# when out of memory, which needs them gone) and nothing run. (The data is sent without MULTI,
# and Redis refuses a write when out of memory but may take the next once memory is freed: a job
# missing a batch must be neither answered, indexed nor sent. The guard is an Idempotency-Key:
# held for this body (by this request, or by a later one after this one's hold expired: the
# first to commit wins) or by nobody, never over an answer already written.)
COMMIT = (
    RUN_WRITES
    + """
local function drop()
  for from = 1, #KEYS, 1000 do
    redis.call('DEL', unpack(KEYS, from, math.min(from + 999, #KEYS)))
  end
end
for first = 1, #KEYS, 1000 do
  local last = math.min(first + 999, #KEYS)
  if redis.call('EXISTS', unpack(KEYS, first, last)) ~= last - first + 1 then
    drop()
    return 0
  end
end
if ARGV[1] ~= '' then
  local holding = redis.call('GET', ARGV[1])
  if holding and string.sub(holding, 1, #ARGV[2]) ~= ARGV[2] then
    drop()
    return -1
  end
end
run_writes(3)
return 1
"""
)

# KEYS: the pacer's schedule. ARGV: how many. The jobs whose turn has come (on Redis's clock),
# earliest first, taken off the schedule: whoever removes a job wakes it.
PACE_DUE = _render(
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""
)
