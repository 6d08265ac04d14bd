-- wrk script: mixed load, 90% POST /v1/recommend and 10% POST /v1/events (one event for a random
-- user and item; the event is acknowledged once durable). Ids come from files (one per line).
-- The bearer token for /v1/events is read from $GENREC_SERVE_TOKEN when set. Prints one JSON
-- line at the end, prefixed with "GENREC_WRK_JSON " (as recommend.lua).
--
--   wrk -t2 -c32 -d60s -s bench/wrk/mixed.lua http://127.0.0.1:8080 -- users.txt items.txt [write_percent]
--
-- Compatible with wrk 4.1 (LuaJIT / Lua 5.1).

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

local function json_string(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == '\\' then return '\\\\' end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

local function read_ids(path)
  local ids = {}
  local f = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in f:lines() do
    line = line:gsub("%s+$", "")
    if line ~= "" then table.insert(ids, json_string(line)) end
  end
  f:close()
  assert(#ids > 0, path .. ": no ids")
  return ids
end

local users, items, write_percent
local read_headers = { ["Content-Type"] = "application/json" }
local write_headers = { ["Content-Type"] = "application/json" }

function init(args)
  assert(args[1] and args[2], "usage: -s mixed.lua URL -- USERS_FILE ITEMS_FILE [write_percent]")
  users = read_ids(args[1])
  items = read_ids(args[2])
  write_percent = tonumber(args[3] or "10")
  local token = os.getenv("GENREC_SERVE_TOKEN")
  if token and token ~= "" then write_headers["Authorization"] = "Bearer " .. token end
  math.randomseed(os.time() + (id or 0) * 7919)
end

function request()
  local u = users[math.random(#users)]
  if math.random(100) <= write_percent then
    local body = '{"user_id":' .. u .. ',"item_id":' .. items[math.random(#items)] .. '}'
    return wrk.format("POST", "/v1/events", write_headers, body)
  end
  return wrk.format("POST", "/v1/recommend", read_headers, '{"user_id":' .. u .. ',"k":10}')
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'GENREC_WRK_JSON {"requests":%d,"seconds":%.3f,"qps":%.2f,"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f,"mean":%.3f},' ..
    '"non_2xx":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"bytes":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3,
    e.status, e.connect, e.read, e.write, e.timeout, summary.bytes))
end
