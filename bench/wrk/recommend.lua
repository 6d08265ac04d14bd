-- wrk script: POST /v1/recommend for raw user ids read from a file (one per line), each thread
-- walking the list from its own random offset. Prints one JSON line at the end, prefixed with
-- "GENREC_WRK_JSON " (QPS, latency percentiles in ms, non-2xx responses, socket errors).
--
--   wrk -t2 -c8 -d60s -s bench/wrk/recommend.lua http://127.0.0.1:8080 -- users.txt [k]
--
-- Compatible with wrk 4.1 (LuaJIT / Lua 5.1).

local threads = {}
local counter = 0

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
    if line ~= "" then table.insert(ids, line) end
  end
  f:close()
  assert(#ids > 0, path .. ": no ids")
  return ids
end

local users, k, bodies
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  local path = args[1] or os.getenv("GENREC_USERS")
  assert(path, "usage: -s recommend.lua URL -- USERS_FILE [k]")
  users = read_ids(path)
  k = tonumber(args[2] or "10")
  -- Pre-built bodies: no string work on the hot path.
  bodies = {}
  for i, u in ipairs(users) do
    bodies[i] = '{"user_id":' .. json_string(u) .. ',"k":' .. k .. '}'
  end
  math.randomseed(os.time() + (id or 0) * 7919)
  counter = math.random(#users)
end

function request()
  counter = counter % #bodies + 1
  return wrk.format("POST", "/v1/recommend", headers, bodies[counter])
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
