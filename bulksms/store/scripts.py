"""The Lua scripts behind every state change of a job, each one atomic and one job only.

Records (see `store` for the keys):
  recipient   32 bytes of its batch's string, sorted by number (layout in `records`). Status 0
              means "as the batch says": pending while the batch is, then queued, rejected
              (batch_failed) or cancelled with the batch's outcome. A report, or Plivo refusing
              the number, writes the recipient's own status, error and time.
  batch       ``pending|not_before|attempts``   waiting for a worker (not before `not_before`)
              ``sending|since|attempts``        a worker claimed it and is (or was) calling Plivo
              ``submitted|at|api_id``           Plivo accepted it
              ``failed|at|reason``              it will never be sent
              ``cancelled|at|cancelled``        the job was cancelled before it was sent
  batch meta  ``e:<n>``  recipients a delivery report moved while the batch was not yet recorded
                         as sent: evidence that Plivo has it (and not counted when it finishes)
              ``q:<n>``  when its task was last enqueued

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


def _render(source: str) -> str:
    names = {status.value: f"'{code}'" for status, code in CODES.items()}
    return Template(source).substitute(TABLES=_tables(), FINAL=FINAL_RANK, **names)


PRELUDE = """
$TABLES

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

local function split(record)
  local out = {}
  for part in string.gmatch(record .. '|', '([^|]*)|') do out[#out + 1] = part end
  return out
end

-- A batch is done: submitted, failed or cancelled. Its recipients still pending take `code`
-- (status 0 says so from now on); those in `refused` (Plivo's invalid_number) get `refused_tail`.
local function finish(job, batches, recipients, n, now, outcome, detail, code, refused,
                      refused_tail)
  redis.call('HSET', batches, n, outcome .. '|' .. now .. '|' .. detail)
  local left = redis.call('HINCRBY', job, 'b:pending', -1)
  redis.call('HINCRBY', job, 'b:' .. outcome, 1)
  redis.call('HSET', job, 'updated_at', now)
  if left == 0 then redis.call('HSET', job, 'sent_at', now) end
  local count = redis.call('STRLEN', recipients) / SIZE
  local pending = count
    - tonumber(redis.call('HGET', batches, 'e:' .. n) or '0')
  for _, number in ipairs(refused) do
    local at = find(recipients, tonumber(number))
    local status = at and count * 8 + at * 24 + 16  -- (its status byte: see `records`)
    if at and redis.call('GETRANGE', recipients, status, status) == '\\0' then
      redis.call('SETRANGE', recipients, status, refused_tail)
      redis.call('HINCRBY', job, 'c:' .. $pending, -1)
      redis.call('HINCRBY', job, 'c:' .. $rejected, 1)
      pending = pending - 1
    end
  end
  redis.call('HINCRBY', job, 'c:' .. $pending, -pending)
  redis.call('HINCRBY', job, 'c:' .. code, pending)
end
"""

# KEYS: job, batches, recipients. ARGV: batch, now.
# {'go', attempt} when this caller may send now; otherwise why not.
CLAIM = _render(
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return {'gone'} end
local f = split(rec)
if f[1] ~= 'pending' then return {f[1]} end
local flags = redis.call('HMGET', KEYS[1], 'halted', 'cancelled', 'paused')
if flags[1] then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], 'failed', flags[1], $rejected, {}, '')
  return {'halted', flags[1]}
end
if flags[2] then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], 'cancelled', 'cancelled', $cancelled, {}, '')
  return {'cancelled'}
end
if flags[3] then return {'paused'} end
-- (a second of slack for clocks that differ between hosts)
if tonumber(f[2] or '0') > tonumber(ARGV[2]) + 1 then return {'early', f[2]} end
local attempt = tostring(tonumber(f[3] or '0') + 1)
redis.call('HSET', KEYS[2], ARGV[1], 'sending|' .. ARGV[2] .. '|' .. attempt)
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
return {'go', attempt}
"""
)

# KEYS: batches. ARGV: batch, attempt, not_before. Nothing reached Plivo: pending again.
RELEASE = _render(
    """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local state, since, attempt = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)$$')
if state ~= 'sending' or attempt ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'pending|' .. ARGV[3] .. '|' .. attempt)
return 1
"""
)

# KEYS: job, batches, recipients. ARGV: batch, now, outcome, detail, code, attempt (or '*'),
# the refused numbers' tail (status, error, time), then the refused numbers (digits).
# 1 done, 0 already done, -1 superseded by another attempt.
FINISH = _render(
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 0 end
local f = split(rec)
if f[1] ~= 'pending' and f[1] ~= 'sending' then return 0 end
if ARGV[6] ~= '*' and (f[1] ~= 'sending' or f[3] ~= ARGV[6]) then return -1 end
local refused = {}
for i = 8, #ARGV do refused[#refused + 1] = ARGV[i] end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], refused, ARGV[7])
return 1
"""
)

# KEYS: job, batches, recipients. ARGV: batch, now, in_flight_seconds, grace_seconds.
# A batch left `sending` (its worker died, or the answer never came): settle it from evidence.
RESOLVE = _render(
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 'gone' end
local f = split(rec)
if f[1] ~= 'sending' then return f[1] end
local age = tonumber(ARGV[2]) - tonumber(f[2])
if age < tonumber(ARGV[3]) then return 'in_flight' end
if redis.call('HEXISTS', KEYS[2], 'e:' .. ARGV[1]) == 1 then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], 'submitted',
         'inferred from delivery reports', $queued, {}, '')
  return 'submitted'
end
if age < tonumber(ARGV[4]) then return 'waiting' end
redis.call('HSET', KEYS[2], ARGV[1], 'pending|0|' .. f[3])
return 'resend'
"""
)

# KEYS: job, recipients, batches. ARGV: number (digits), code, uuid (16 bytes, or '' to keep
# what is there), tail (status, error, time), now, batch, units, amount (in 1/100000).
# 1 moved, 0 old news, -1 no such recipient. What Plivo billed is added once per recipient,
# with its first final status. Every report runs this: it makes few calls into Redis (a read of
# the batch's numbers, searched here, and one write of the record).
REPORT = _render(
    """
$TABLES
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
local base = count * 8 + at * 24  -- its state: UUID, then status, error, time
local own = redis.call('GETRANGE', KEYS[2], base + 16, base + 16)
local old = own
if own == '\\0' then
  local batch = redis.call('HGET', KEYS[3], ARGV[6]) or ''
  old = IMPLIED[string.match(batch, '^([^|]*)')] or $pending
end
if RANK[ARGV[2]] <= RANK[old] then return 0 end
-- Pending until now: Plivo has the batch, whatever the worker recorded (or not) so far.
if old == $pending then redis.call('HINCRBY', KEYS[3], 'e:' .. ARGV[6], 1) end
if ARGV[3] ~= '' then
  redis.call('SETRANGE', KEYS[2], base, ARGV[3] .. ARGV[4])
else
  redis.call('SETRANGE', KEYS[2], base + 16, ARGV[4])
end
redis.call('HINCRBY', KEYS[1], 'c:' .. old, -1)
redis.call('HINCRBY', KEYS[1], 'c:' .. ARGV[2], 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
if RANK[ARGV[2]] == $FINAL then
  redis.call('HINCRBY', KEYS[1], 'billed_units', ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'billed_amount_e5', ARGV[8])
end
return 1
"""
)

# KEYS: bucket. ARGV: capacity, refill per second. 0 when a token was taken, else the seconds
# to wait for one. Redis's own clock, so every worker on every host shares one bucket.
BUCKET_TAKE = _render(
    """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or t
tokens = math.min(capacity, tokens + math.max(0, t - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(t))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(wait)
"""
)
