-- One GCRA step for one key, atomically, on Redis's clock. A line-by-line copy of `Gcra::step`
-- in src/limits/mod.rs; all times are integer microseconds (epoch microseconds stay below 2^53,
-- so Lua's doubles hold them exactly).
--
-- KEYS[1]  the application's key: the theoretical arrival time of its next request
-- ARGV[1]  interval: time between two requests at the steady rate
-- ARGV[2]  tolerance: interval * (burst - 1)
-- ARGV[3]  burst
-- ARGV[4]  "now" for tests; empty: Redis's TIME, so that the nodes' clocks do not matter
--
-- Returns {allowed (0|1), remaining, retry_after, reset_after}.

-- Redis < 5 must be told to replicate effects, not the script (TIME is not deterministic).
if redis.replicate_commands then
  redis.replicate_commands()
end

local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local now
if ARGV[4] ~= nil and ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local ahead = tat - now
if ahead > tolerance then
  return {0, 0, ahead - tolerance, ahead}
end
local new_tat = tat + interval
ahead = new_tat - now
-- Once the arrival time has passed the key says nothing (a full bucket): let it expire then.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(ahead / 1000))
local remaining = math.floor((tolerance - (ahead - interval)) / interval)
if remaining > burst - 1 then
  remaining = burst - 1
end
return {1, remaining, 0, ahead}
