"""The Lua scripts behind every state change of a job, each one atomic and one job only.

Records (see `store` for the keys):
  recipient   ``p`` while pending, else ``code|message_uuid|error_code|unix_time``
  batch       ``pending|not_before|attempts``   waiting for a worker (not before `not_before`)
              ``sending|since|attempts``        a worker claimed it and is (or was) calling Plivo
              ``submitted|at|api_id``           Plivo accepted it
              ``failed|at|reason``              it will never be sent
              ``cancelled|at|cancelled``        the job was cancelled before it was sent
  batch meta  ``e:<n>``  a delivery report arrived while the batch was not yet recorded as sent:
                         evidence that Plivo has it
              ``q:<n>``  when its task was last enqueued
"""

PRELUDE = """
local RANK = {p = 0, q = 1, s = 2, d = 3, u = 3, f = 3, r = 3, x = 3}

-- Move one recipient forward; the job's per-status counters move with it.
local function advance(job, recipients, number, code, uuid, err, now)
  local cur = redis.call('HGET', recipients, number)
  if not cur then return -1 end
  local old = string.sub(cur, 1, 1)
  if RANK[code] <= RANK[old] then return 0 end
  if uuid == '' then uuid = string.match(cur, '^.|([^|]*)') or '' end
  redis.call('HSET', recipients, number, code .. '|' .. uuid .. '|' .. err .. '|' .. now)
  redis.call('HINCRBY', job, 'c:' .. old, -1)
  redis.call('HINCRBY', job, 'c:' .. code, 1)
  return 1
end

local function split(record)
  local out = {}
  for part in string.gmatch(record .. '|', '([^|]*)|') do out[#out + 1] = part end
  return out
end

-- A batch is done: submitted or failed. Its recipients still pending become `code` (with
-- `err`); those in `refused` (Plivo's invalid_number) become rejected.
local function finish(job, batches, recipients, n, now, outcome, detail, code, err, refused)
  redis.call('HSET', batches, n, outcome .. '|' .. now .. '|' .. detail)
  local left = redis.call('HINCRBY', job, 'b:pending', -1)
  redis.call('HINCRBY', job, 'b:' .. outcome, 1)
  redis.call('HSET', job, 'updated_at', now)
  if left == 0 then redis.call('HSET', job, 'sent_at', now) end
  local all = redis.call('HGETALL', recipients)
  for i = 1, #all, 2 do
    if all[i + 1] == 'p' then
      if refused[all[i]] then
        advance(job, recipients, all[i], 'r', '', 'invalid_number', now)
      else
        advance(job, recipients, all[i], code, '', err, now)
      end
    end
  end
end
"""

# KEYS: job, batches, recipients. ARGV: batch, now.
# {'go', attempt} when this caller may send now; otherwise why not.
CLAIM = (
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return {'gone'} end
local f = split(rec)
if f[1] ~= 'pending' then return {f[1]} end
local flags = redis.call('HMGET', KEYS[1], 'halted', 'cancelled', 'paused')
if flags[1] then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], 'failed', flags[1], 'r', 'batch_failed', {})
  return {'halted', flags[1]}
end
if flags[2] then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], 'cancelled', 'cancelled', 'x', '', {})
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
RELEASE = """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local state, since, attempt = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)$')
if state ~= 'sending' or attempt ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'pending|' .. ARGV[3] .. '|' .. attempt)
return 1
"""

# KEYS: job, batches, recipients. ARGV: batch, now, outcome, detail, code, err, attempt (or
# '*'), then the refused numbers. 1 done, 0 already done, -1 superseded by another attempt.
FINISH = (
    PRELUDE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 0 end
local f = split(rec)
if f[1] ~= 'pending' and f[1] ~= 'sending' then return 0 end
if ARGV[7] ~= '*' and (f[1] ~= 'sending' or f[3] ~= ARGV[7]) then return -1 end
local refused = {}
for i = 8, #ARGV do refused[ARGV[i]] = true end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], refused)
return 1
"""
)

# KEYS: job, batches, recipients. ARGV: batch, now, in_flight_seconds, grace_seconds.
# A batch left `sending` (its worker died, or the answer never came): settle it from evidence.
RESOLVE = (
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
         'inferred from delivery reports', 'q', '', {})
  return 'submitted'
end
if age < tonumber(ARGV[4]) then return 'waiting' end
redis.call('HSET', KEYS[2], ARGV[1], 'pending|0|' .. f[3])
return 'resend'
"""
)

# KEYS: job, recipients, batches. ARGV: number, code, uuid, error code, now, batch, units,
# amount. What Plivo billed is added once per recipient, with its first final status.
REPORT = (
    PRELUDE
    + """
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur == 'p' then redis.call('HSETNX', KEYS[3], 'e:' .. ARGV[6], ARGV[5]) end
local moved = advance(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if moved == 1 then
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
  if RANK[ARGV[2]] == 3 then
    redis.call('HINCRBY', KEYS[1], 'billed_units', ARGV[7])
    redis.call('HINCRBYFLOAT', KEYS[1], 'billed_amount', ARGV[8])
  end
end
return moved
"""
)

# KEYS: bucket. ARGV: capacity, refill per second. 0 when a token was taken, else the seconds
# to wait for one. Redis's own clock, so every worker on every host shares one bucket.
BUCKET_TAKE = """
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
