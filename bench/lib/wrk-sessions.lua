-- wrk script of the production phase (bench/lib/wrk.ts): every request carries the next
-- session's cookie, round-robin over a cookie file, and a session cookie a response sets
-- replaces that session's entry, as each browser's own jar would.
--
-- Arguments (after `--`): cookie file (one Cookie header value per line), jar file (the
-- Set-Cookies taken are appended there, "index<TAB>name=value", for the next slice),
-- cookie name, number of sessions to use.
--
-- Which session a response belongs to: the request says it in X-Bench-Session and the
-- bench's no-work upstream echoes it (wrk's response callback does not say which
-- connection answered). With one session there is nothing to tell apart.

local cookies = {}
local count = 0
local next_index = 0
local jar_file = nil
local prefix = nil

function init(args)
  local wanted = tonumber(args[4])
  for line in io.lines(args[1]) do
    count = count + 1
    cookies[count] = line
    if count == wanted then break end
  end
  jar_file = args[2]
  prefix = args[3] .. "="
end

function request()
  next_index = next_index + 1
  if next_index > count then next_index = 1 end
  wrk.headers["Cookie"] = cookies[next_index]
  wrk.headers["X-Bench-Session"] = tostring(next_index)
  return wrk.format()
end

function response(status, headers, body)
  local set_cookie = headers["set-cookie"] or headers["Set-Cookie"]
  if set_cookie == nil or set_cookie:sub(1, #prefix) ~= prefix then return end
  local index = 1
  if count > 1 then
    index = tonumber(headers["x-bench-session"] or headers["X-Bench-Session"] or "")
    if index == nil then return end
  end
  local pair = set_cookie:match("^[^;]*")
  -- A cleared cookie (empty value) is not taken: the bench's session must stay.
  if #pair == #prefix or cookies[index] == pair then return end
  cookies[index] = pair
  local out = io.open(jar_file, "a")
  out:write(index, "\t", pair, "\n")
  out:close()
end

function done(summary, latency, requests)
  -- Latency quantiles on a grid of 0.1 % (µs), for the bench to pool slices by.
  local quantiles = {}
  for i = 1, 1000 do
    quantiles[i] = string.format("%d", latency:percentile(i / 10 - 0.05))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH-WRK {"requests":%d,"durationUs":%d,"non2xx":%d,"errors":%d,"quantilesUs":[%s]}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    table.concat(quantiles, ",")))
end
