/* script.h - the one Lua script behind every limiter operation.
 *
 * KEYS[1] is the rate key (a string: the GCRA's theoretical arrival time),
 * KEYS[2] the running-slot key (a sorted set of slot holders scored by the
 * end of their lease).  ARGV[1] names the operation.  Times are integer
 * microseconds of the server's clock (TIME), which a Lua double holds
 * exactly below 2^53; string.format('%.0f') writes them back without the
 * 14-digit rounding of Lua's tostring.  Every time is held at 2^53 - 1,
 * so a tiny rate saturates instead of wrapping.
 *
 *   book  T tau           -> {microseconds to wait (-1: never), the server's
 *                            time of the booking}
 *   take  cap lease token -> {1, 0} granted, or {0, microseconds until the
 *                            oldest lease ends}
 *   give  channel token [message]
 *                         -> 1 if the slot was held (and PUBLISH message,
 *                            by default 1, on channel to wake waiters),
 *                            else 0
 *   renew lease token...  -> how many of the tokens still held a slot
 *   check                 -> the server's time (it runs scripts and TIME)
 *
 * Each key expires once nothing in it lies in the future: the rate key when
 * its schedule has passed, the slot set when its last lease has ended (and
 * Redis deletes a sorted set whose last member is removed).  A per-key
 * limiter runs the same operations on the keys of one job key (keys.c):
 * the same saturation, the same expiry, one budget per job key. */
#ifndef AIOMETER__REDIS_SCRIPT_H
#define AIOMETER__REDIS_SCRIPT_H

#define AIOMETER__REDIS_SCRIPT \
    "if redis.replicate_commands then redis.replicate_commands() end\n" \
    "local LIMIT = 9007199254740991\n" \
    "local function s(x) return string.format('%.0f', x) end\n" \
    "local function keep(k, us)\n" \
    "  local ms = math.floor(us / 1000) + 1\n" \
    "  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, s(ms)) end\n" \
    "end\n" \
    "local t = redis.call('TIME')\n" \
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n" \
    "local op = ARGV[1]\n" \
    "if op == 'book' then\n" \
    "  local T, tau = tonumber(ARGV[2]), tonumber(ARGV[3])\n" \
    "  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n" \
    "  if tat >= LIMIT then return {-1, now} end\n" \
    "  local grant = math.max(tat - tau, now)\n" \
    "  local nxt = math.max(tat, now) + T\n" \
    "  if nxt > LIMIT then nxt = LIMIT end\n" \
    "  redis.call('SET', KEYS[1], s(nxt), 'PX', s(math.floor((nxt - now) / 1000) + 1))\n" \
    "  return {grant - now, now}\n" \
    "elseif op == 'take' then\n" \
    "  local cap, lease = tonumber(ARGV[2]), tonumber(ARGV[3])\n" \
    "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', s(now))\n" \
    "  if redis.call('ZCARD', KEYS[2]) < cap then\n" \
    "    redis.call('ZADD', KEYS[2], s(now + lease), ARGV[4])\n" \
    "    keep(KEYS[2], lease)\n" \
    "    return {1, 0}\n" \
    "  end\n" \
    "  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n" \
    "  return {0, tonumber(first[2]) - now}\n" \
    "elseif op == 'give' then\n" \
    "  if redis.call('ZREM', KEYS[2], ARGV[3]) == 1 then\n" \
    "    redis.call('PUBLISH', ARGV[2], ARGV[4] or '1')\n" \
    "    return 1\n" \
    "  end\n" \
    "  return 0\n" \
    "elseif op == 'renew' then\n" \
    "  local lease = tonumber(ARGV[2])\n" \
    "  local e, n = s(now + lease), 0\n" \
    "  for i = 3, #ARGV do\n" \
    "    n = n + redis.call('ZADD', KEYS[2], 'XX', 'CH', e, ARGV[i])\n" \
    "  end\n" \
    "  if n > 0 then keep(KEYS[2], lease) end\n" \
    "  return n\n" \
    "elseif op == 'check' then\n" \
    "  return now\n" \
    "end\n" \
    "return redis.error_reply('aiometer: unknown operation')\n"

#endif
