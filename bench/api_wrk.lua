-- The wrk side of bench/api.py: one script, three modes, every answer checked.
--
--   get     GET /v1/resources/{id}, cycling over the thread's resources: 200 and ETag "<version>".
--   create  POST /v1/resources with TENURE_WRK_CREATE: 201, a Location under /v1/resources/ and ETag "1".
--   event   POST /v1/resources/{id}/events with If-Match "<version>" and the event that leaves the
--           resource's state, cycling over the thread's resources: 200 and ETag "<version + 1>"; only
--           then does the resource move on (state and version), so the next If-Match is right.
--
-- Run it with as many threads as connections (wrk -t8 -c8): each thread's Lua state then drives one
-- connection, one request at a time, and wrk asks for a request only after the last one's answer was
-- read, so the version a thread pins is the one its last answer gave. Threads never share a resource.
--
-- Environment (bench/api.py sets it):
--   TENURE_WRK_MODE    get, create or event
--   TENURE_WRK_TOKEN   the bearer token
--   TENURE_WRK_IN      get and event: one resource a line, "<thread> <id> <state> <version>" (threads from 1)
--   TENURE_WRK_CREATE  create: the request body
--   TENURE_WRK_EVENTS  event: one line per state, "<state> <next state> <body>"
--   TENURE_WRK_OUT     where done() writes what happened, as one JSON object
--
-- wrk copies only flat tables between Lua states (a nested one crashes it), so each thread keeps its
-- resources in three parallel arrays, and done() reads them with thread:get after the run.

local JSON_TYPE = "application/json"
local mode = os.getenv("TENURE_WRK_MODE")
local MAX_EXAMPLES = 3

local function fail(message)
   io.stderr:write("api_wrk.lua: " .. message .. "\n")
   os.exit(2)
end

local function env(name)
   local value = os.getenv(name)
   if value == nil or value == "" then
      fail(name .. " is not set")
   end
   return value
end

if mode ~= "get" and mode ~= "create" and mode ~= "event" then
   fail("TENURE_WRK_MODE must be get, create or event, not " .. tostring(mode))
end

-- --- the main state: hands out thread numbers, gathers the threads' results ----------------------

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
   thread:set("index", #threads)
end

local function quote(s)
   s = tostring(s)
   s = s:gsub('[%c"\\]', function(c)
      if c == '"' then
         return '\\"'
      elseif c == "\\" then
         return "\\\\"
      end
      return string.format("\\u%04x", c:byte())
   end)
   return '"' .. s .. '"'
end

local function number(x)
   if x ~= x or x == math.huge or x == -math.huge then
      return "null"
   end
   return string.format("%.17g", x)
end

local function array(items, encode)
   local out = {}
   for i, item in ipairs(items) do
      out[i] = encode(item)
   end
   return "[" .. table.concat(out, ",") .. "]"
end

function done(summary, latency, requests)
   local ok, bad, examples, created, resources, in_flight = 0, 0, {}, {}, {}, {}
   for _, t in ipairs(threads) do
      ok = ok + t:get("ok")
      bad = bad + t:get("bad")
      for _, e in ipairs(t:get("examples")) do
         examples[#examples + 1] = e
      end
      for _, id in ipairs(t:get("created")) do
         created[#created + 1] = id
      end
      local ids, states, versions = t:get("ids"), t:get("states"), t:get("versions")
      for i, id in ipairs(ids) do
         resources[#resources + 1] = "[" .. quote(id) .. "," .. quote(states[i]) .. "," .. versions[i] .. "]"
      end
      local asked = t:get("asked")
      if asked ~= 0 then
         in_flight[#in_flight + 1] = ids[asked]
      end
   end
   local e = summary.errors
   local percentiles = {}
   for _, p in ipairs({ 50, 90, 99, 99.9 }) do
      percentiles[#percentiles + 1] = quote(p) .. ":" .. number(latency:percentile(p))
   end
   local json = "{"
      .. '"mode":' .. quote(mode)
      .. ',"duration_us":' .. summary.duration
      .. ',"requests":' .. summary.requests
      .. ',"bytes":' .. summary.bytes
      .. ',"socket_errors":{"connect":' .. e.connect .. ',"read":' .. e.read .. ',"write":' .. e.write
      .. ',"timeout":' .. e.timeout .. "}"
      .. ',"non_2xx_3xx":' .. e.status
      .. ',"latency_us":{' .. table.concat(percentiles, ",")
      .. ',"mean":' .. number(latency.mean) .. ',"max":' .. number(latency.max) .. "}"
      .. ',"threads":' .. #threads
      .. ',"ok":' .. ok
      .. ',"bad":' .. bad
      .. ',"examples":' .. array(examples, quote)
      .. ',"created":' .. array(created, quote)
      .. ',"resources":[' .. table.concat(resources, ",") .. "]"
      .. ',"in_flight":' .. array(in_flight, quote)
      .. "}\n"
   local f = assert(io.open(env("TENURE_WRK_OUT"), "w"))
   f:write(json)
   f:close()
end

-- --- each thread's state: its own resources and one connection ---------------------------------

-- Counted per thread and read by done(): answers as expected, other answers, the first few of those,
-- the ids created; the resources (ids, states, versions: what the last answers said) and the one asked
-- for last. asked is the index of a resource whose request went out with no answer yet (0: none); at
-- the end of the run it names the one request that may have been applied without wrk reading the answer.
ok, bad, examples, created = 0, 0, {}, {}
ids, states, versions = {}, {}, {}
asked = 0

local at = 1 -- the resource the next request is for; moves on when an answer comes
local headers, create_request, get_requests, events = nil, nil, {}, {}

local function header_table(extra)
   local h = { Host = headers.Host, Authorization = headers.Authorization, Accept = headers.Accept }
   for k, v in pairs(extra or {}) do
      h[k] = v
   end
   return h
end

function init(args)
   headers = {
      Host = wrk.headers["Host"],
      Authorization = "Bearer " .. env("TENURE_WRK_TOKEN"),
      Accept = JSON_TYPE,
   }
   if mode == "create" then
      create_request = wrk.format("POST", "/v1/resources", header_table({ ["Content-Type"] = JSON_TYPE }),
         env("TENURE_WRK_CREATE"))
      return
   end
   for line in io.lines(env("TENURE_WRK_IN")) do
      local k, id, state, version = line:match("^(%d+) (%S+) (%S+) (%d+)$")
      if k == nil then
         fail("bad line in TENURE_WRK_IN: " .. line)
      end
      if tonumber(k) == index then
         ids[#ids + 1], states[#states + 1], versions[#versions + 1] = id, state, tonumber(version)
      end
   end
   if #ids == 0 then
      fail("no resources for thread " .. tostring(index))
   end
   if mode == "get" then
      for i, id in ipairs(ids) do
         get_requests[i] = wrk.format("GET", "/v1/resources/" .. id, header_table())
      end
   else
      for line in env("TENURE_WRK_EVENTS"):gmatch("[^\n]+") do
         local state, next_state, body = line:match("^(%S+) (%S+) (.+)$")
         events[state] = { next_state = next_state, body = body }
      end
   end
end

-- wrk calls request() once more than it sends (to check the script's first request), and again for
-- a connection it had to reopen; so request() changes nothing but asked, and response() moves on.
function request()
   if mode == "create" then
      asked = 1
      return create_request
   end
   asked = at
   if mode == "get" then
      return get_requests[at]
   end
   local event = events[states[at]]
   local h = header_table({ ["Content-Type"] = JSON_TYPE, ["If-Match"] = '"' .. versions[at] .. '"' })
   return wrk.format("POST", "/v1/resources/" .. ids[at] .. "/events", h, event.body)
end

local function header(received, name)
   for k, v in pairs(received) do
      if k:lower() == name then
         return v
      end
   end
   return nil
end

local function refuse(status, received, body, wanted)
   bad = bad + 1
   if #examples < MAX_EXAMPLES then
      examples[#examples + 1] = string.format("%s: wanted %s, got %d with ETag %s, Location %s; body %s", mode,
         wanted, status, tostring(header(received, "etag")), tostring(header(received, "location")),
         (body or ""):sub(1, 300))
   end
end

function response(status, received, body)
   asked = 0
   if mode == "create" then
      local location = header(received, "location") or ""
      local id = location:match("^/v1/resources/([^/]+)$")
      if status == 201 and id ~= nil and header(received, "etag") == '"1"' then
         ok = ok + 1
         created[#created + 1] = id
      else
         refuse(status, received, body, '201 with a Location and ETag "1"')
      end
      return
   end
   local i = at
   at = at % #ids + 1
   if mode == "get" then
      local etag = '"' .. versions[i] .. '"'
      if status == 200 and header(received, "etag") == etag then
         ok = ok + 1
      else
         refuse(status, received, body, "200 with ETag " .. etag)
      end
      return
   end
   local etag = '"' .. (versions[i] + 1) .. '"'
   if status == 200 and header(received, "etag") == etag then
      ok = ok + 1
      states[i], versions[i] = events[states[i]].next_state, versions[i] + 1
   else
      refuse(status, received, body, "200 with ETag " .. etag .. " for " .. ids[i])
   end
end
