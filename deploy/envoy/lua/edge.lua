-- What the caller sees at the edge, whatever protocol it speaks: the first filter of the chain, so
-- it sees requests as they come in and responses as they go out. Envoy skips it for native gRPC,
-- which needs none of this.
--
-- - Records the caller's protocol (grpc-web, connect or rest) and HTTP method as dynamic
--   metadata shopmesh.edge protocol and method, for the access log, and as the request header
--   EDGE_PROTOCOL_HEADER for lua/health.lua, which removes it.
-- - Asks a REST or Connect call's page to fit what the transcoder or the bridge holds of its
--   reply (PAGE_BYTES_KEY): a list's page is then smaller, and never too large to answer.
-- - Refuses a REST body with a field its message does not have: INVALID_ARGUMENT, as a
--   google.rpc.Status JSON body. The transcoder would drop it silently.
-- - Refuses a REST query parameter for a field the path or the body sets (any, when the body is
--   the whole request): the transcoder lets the query win, so DELETE /users/A?user_id=B deleted B.
-- - Strips the grpc-* headers of REST and Connect replies, after recording the gRPC status they
--   carry (Envoy's own REST replies carry one for this filter only).
-- - Refuses a Connect call whose connect-timeout-ms is not up to 10 digits with 400, as a
--   malformed grpc-timeout is: the bridge would drop it, and the call run on the default deadline.
-- - Serves Connect with the proto codec only (the services speak protobuf): a Connect call in
--   JSON, or any other codec, is refused with 415, as the Connect protocol says, before it
--   reaches them.
-- - Repairs the Connect bridge's errors, unary and at the end of a stream: their message stays
--   percent-encoded as grpc-message was, and each detail's type keeps the type.googleapis.com/
--   prefix that Connect leaves out.
--
-- - Serves a Connect GET only for the rpcs in CONNECT_GET (unary, NO_SIDE_EFFECTS): any other rpc
--   in CONNECT_RPCS is refused with 405 before it reaches a service (a method the edge does not
--   serve gets its route's 404, as a POST does), so a replayed URL never places an order. One
--   that gives a query parameter twice is refused with 400: the bridge would read the first. So
--   is any other method whose query says connect=v1, which the bridge would serve as a GET.
-- - Takes a Connect GET's base64 message padded or not, as Connect says (the bridge reads a
--   padded one as no message), and refuses with 400 one outside base64url's alphabet or that
--   does not decode to whole bytes (the bridge would read no message), and a GET with a body
--   (the bridge would answer the body's message under the URL's).
-- - Refuses a unary Connect request (application/proto) to a streaming rpc with 415, as Connect
--   servers do: the bridge would pass on the stream as one broken reply, once it ended.
-- - Holds a gRPC-Web text body whole before the gRPC-Web filter decodes it: behind a route's
--   retry policy, base64 pieces under 4 characters reached the service decoded twice.
-- - Refuses gRPC-Web in any content type but the four Envoy's gRPC-Web filter takes (+json, say),
--   which would reach a service as native gRPC.
-- - Refuses a REST body that gives a field the path sets another value, by either name: the
--   transcoder keeps the path's, silently under the JSON name.
-- - Refuses with 415 a request to a gRPC method's path in no protocol Envoy's filters take, which
--   a service's grpc-js would answer with a bare 415.
-- - Refuses a REST request with a body on a route that takes none (the transcoder would read it
--   unchecked), a query parameter without a value (the transcoder skips it), and a compressed
--   body (415; the transcoder would read the compressed bytes as JSON).
-- - Classifies a request as Envoy's filters will treat it, not as the client labelled it: an
--   encoded connect=v1 is a Connect GET, and a REST route's request is REST unless its content
--   type is exactly gRPC's (the transcoder's rule), so no header skips the REST checks.
--
-- REST_BODIES (method, path pattern, body message), REST_QUERIES (method, path pattern, the
-- names of the fields path and body set, the body rule, the fields a query may repeat, the request
-- message), MESSAGES (per message, each JSON key of
-- a field: the field's name, and the message it holds or false), CONNECT_GET (the paths a GET may call),
-- CONNECT_RPCS (the paths of every rpc the edge serves),
-- CONNECT_STREAMS (the paths of streaming rpcs) with CONNECT_UNARY_ON_STREAM_REFUSAL,
-- CONNECT_GET_BODY_REFUSAL (for a GET with a body),
-- CONNECT_GET_REFUSAL (the Connect error for any other), CONNECT_GET_REPEAT_REFUSAL (for a GET
-- that gives a query parameter twice), CONNECT_QUERY_REFUSAL (for any other method whose query
-- says connect=v1), CONNECT_TIMEOUT_REFUSAL (for a connect-timeout-ms that is not one),
-- CONNECT_MESSAGE_REFUSAL (for a GET whose base64 message is not base64url),
-- GRPC_WEB_CODEC_REFUSAL (message and grpc-status-details-bin, for gRPC-Web in another codec),
-- CONNECT_CODEC_REFUSAL (the Connect error for a call in another codec), CORS_ORIGINS (the origins browsers may call from, as keys) with
-- CORS_EXPOSE_HEADERS, EDGE_PROTOCOL_HEADER, and PAGE_BYTES_KEY with REST_PAGE_BYTES,
-- CONNECT_PAGE_BYTES (by HTTP version) and CONNECT_SMALLEST_PAGE_BYTES are defined above this file by
-- deploy/envoy/config.ts, from the contract and the topology.

local NAMESPACE = "shopmesh.edge"

local function unescaped(text)
  return (text:gsub("%+", " "):gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- The query's parameters in order, each name and value percent-decoded, as Envoy's Connect bridge
-- reads them.
local function query_of(path)
  local params = {}
  for pair in (path:match("%?(.*)$") or ""):gmatch("[^&]+") do
    local name, value = pair:match("^([^=]*)=?(.*)$")
    params[#params + 1] = {
      name = unescaped(name), value = unescaped(value), bare = not pair:find("=", 1, true),
    }
  end
  return params
end

-- `path` with the value of each query parameter named `name` replaced by `value`, which must need
-- no percent-encoding.
local function with_param(path, name, value)
  local base, query = path:match("^([^?]*)%?(.*)$")
  if base == nil then return path end
  local out = {}
  for pair in query:gmatch("[^&]+") do
    local key = pair:match("^([^=]*)")
    out[#out + 1] = unescaped(key) == name and (key .. "=" .. value) or pair
  end
  return base .. "?" .. table.concat(out, "&")
end

local function query_says(params, name, value)
  for _, param in ipairs(params) do
    if param.name == name and param.value == value then return true end
  end
  return false
end

-- The REST route the transcoder maps this request to, if any.
local function rest_route(headers)
  local method = headers:get(":method")
  local path = (headers:get(":path") or ""):gsub("%?.*", "")
  for _, route in ipairs(REST_QUERIES) do
    if route.method == method and path:find(route.pattern) then return route end
  end
  return nil
end

-- The protocol as Envoy's filters will treat the request, whatever the client meant: the bridge
-- takes any method whose query says connect=v1 (encoded or not) for a Connect GET, and the
-- transcoder takes a REST route's request unless its content type is exactly gRPC's.
-- The content types Envoy's gRPC-Web filter takes, exactly; it passes any other on unchanged.
local GRPC_WEB = {
  ["application/grpc-web"] = true,
  ["application/grpc-web+proto"] = true,
  ["application/grpc-web-text"] = true,
  ["application/grpc-web-text+proto"] = true,
}

local function protocol_of(headers)
  local kind = headers:get("content-type") or ""
  if GRPC_WEB[kind] then return "grpc-web" end
  if kind == "application/grpc" or kind:sub(1, 17) == "application/grpc+" then return "grpc" end
  if kind:sub(1, 20) == "application/connect+" then return "connect" end
  -- Connect with no codec named: the bridge serves it, so it is checked as Connect.
  if kind == "application/connect" or kind:sub(1, 20) == "application/connect;" then
    return "connect"
  end
  if headers:get("connect-protocol-version") and kind:sub(1, 12) == "application/"
    and kind:sub(1, 19) ~= "application/connect" then
    return "connect"
  end
  if query_says(query_of(headers:get(":path") or ""), "connect", "v1") then return "connect" end
  if kind:sub(1, 16) == "application/grpc" and rest_route(headers) == nil then
    -- gRPC-Web in another codec (+json) or with parameters: envoy_on_request refuses it.
    if kind:sub(1, 20) == "application/grpc-web" then return "grpc-web" end
    return "grpc"
  end
  return "rest"
end

-- A JSON reader that checks object keys against MESSAGES and notes the first unknown one
-- (`unknown`), the first field an object sets twice, by either of its names (`twice`): the
-- transcoder would keep the last value silently, and the first repeated field whose value is not
-- a list of items (`misshapen`): the transcoder drops a null item, flattens a list inside the
-- list and takes a lone item for a list of one. It reads to the end all the same. It takes only
-- JSON's own keys: the transcoder also reads unquoted and single-quoted ones and trailing commas,
-- which would pass these checks unread, so a body this reader cannot read is refused.
local Reader = {}
Reader.__index = Reader

function Reader:space()
  self.pos = self.text:find("[^ \t\r\n]", self.pos) or (#self.text + 1)
end

function Reader:string()
  local pos = self.pos + 1
  local parts = {}
  while true do
    local stop = self.text:find('["\\]', pos)
    if stop == nil then error("malformed") end
    parts[#parts + 1] = self.text:sub(pos, stop - 1)
    if self.text:sub(stop, stop) == '"' then
      self.pos = stop + 1
      return table.concat(parts)
    end
    parts[#parts + 1] = self.text:sub(stop, stop + 1)
    pos = stop + 2
  end
end

local JSON_ESCAPES = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

-- The UTF-8 of a code point below U+10000 (a JSON \u escape).
local function utf8_of(code)
  if code < 0x80 then return string.char(code) end
  if code < 0x800 then return string.char(0xC0 + math.floor(code / 64), 0x80 + code % 64) end
  return string.char(0xE0 + math.floor(code / 4096), 0x80 + math.floor(code / 64) % 64,
    0x80 + code % 64)
end

-- A JSON string's text with its escapes read, as the transcoder reads a key: "user\u005fid" is
-- user_id.
local function json_unescaped(text)
  if not text:find("\\", 1, true) then return text end
  local out, pos = {}, 1
  while true do
    local at = text:find("\\", pos, true)
    if at == nil then break end
    out[#out + 1] = text:sub(pos, at - 1)
    local c = text:sub(at + 1, at + 1)
    if c == "u" then
      out[#out + 1] = utf8_of(tonumber(text:sub(at + 2, at + 5), 16) or 0xFFFD)
      pos = at + 6
    else
      out[#out + 1] = JSON_ESCAPES[c] or c
      pos = at + 2
    end
  end
  out[#out + 1] = text:sub(pos)
  return table.concat(out)
end

-- How deep a body's objects and arrays may nest: protobuf's own JSON parser refuses deeper ones,
-- and this reader, which recurses, would run out of stack long before JSON's end.
local MAX_DEPTH = 100
local TOO_DEEP = {}

-- Whether the value at the reader's position is JSON's null.
function Reader:null_ahead()
  return self.text:sub(self.pos, self.pos + 3) == "null"
    and not self.text:sub(self.pos + 4, self.pos + 4):find("[%w_]")
end

-- Reads one value; `message` names the message an object must fit, nil for any value. `shape`
-- is "list" for a repeated field's value (a list, or null for none) and "item" for one of its
-- items (neither a list nor null).
function Reader:value(message, path, depth, shape)
  depth = (depth or 0) + 1
  if depth > MAX_DEPTH then error(TOO_DEEP) end
  self:space()
  local c = self.text:sub(self.pos, self.pos)
  if shape == "list" and c ~= "[" and not self:null_ahead() then
    self.misshapen = self.misshapen or { path, "is a list: give its items in [ ]" }
  elseif shape == "item" and (c == "[" or self:null_ahead()) then
    self.misshapen = self.misshapen or { path, "is an item of a list: neither a list nor null" }
  end
  if c == "{" then
    local fields = message and MESSAGES[message]
    local seen = {}
    self.pos = self.pos + 1
    self:space()
    if self.text:sub(self.pos, self.pos) == "}" then
      self.pos = self.pos + 1
      return
    end
    while true do
      self:space()
      if self.text:sub(self.pos, self.pos) ~= '"' then error("malformed") end
      local key = json_unescaped(self:string())
      local field = path == "" and key or (path .. "." .. key)
      local inner, shape = nil, nil
      if fields then
        local entry = fields[key]
        if entry == nil then
          self.unknown = self.unknown or field
        else
          inner = entry.message or nil
          shape = entry.list and "list" or nil
          if seen[entry.name] then self.twice = self.twice or field end
          seen[entry.name] = true
        end
      end
      self:space()
      if self.text:sub(self.pos, self.pos) ~= ":" then error("malformed") end
      self.pos = self.pos + 1
      self:space()
      if path == "" and self.wanted[key] and self.text:sub(self.pos, self.pos) == '"' then
        self.found[key] = json_unescaped(self:string())
      else
        self:value(inner, field, depth, shape)
      end
      self:space()
      c = self.text:sub(self.pos, self.pos)
      self.pos = self.pos + 1
      if c == "}" then return end
      if c ~= "," then error("malformed") end
    end
  elseif c == "[" then
    self.pos = self.pos + 1
    self:space()
    if self.text:sub(self.pos, self.pos) == "]" then
      self.pos = self.pos + 1
      return
    end
    local index = 0
    while true do
      self:value(message, path .. "[" .. index .. "]", depth, shape == "list" and "item" or nil)
      self:space()
      c = self.text:sub(self.pos, self.pos)
      self.pos = self.pos + 1
      if c == "]" then return end
      if c ~= "," then error("malformed") end
      index = index + 1
    end
  elseif c == '"' then
    self:string()
  else
    local stop = self.text:find("[,%]} \t\r\n]", self.pos) or (#self.text + 1)
    if stop == self.pos then error("malformed") end
    self.pos = stop
  end
  return
end

-- Whether `text` is JSON (or only white space), then the first field of it that `message` does
-- not have, e.g. "lines[0].colour", and the first one an object sets twice (nil for none), then
-- the string each key of `wanted` has at the top level, by key. Not JSON: false, and true when
-- it nests deeper than MAX_DEPTH.
local function misfit_fields(text, message, wanted)
  if not text:find("[^ \t\r\n]") then return true end
  local reader = setmetatable({ text = text, pos = 1, wanted = wanted, found = {} }, Reader)
  local read, failure = pcall(reader.value, reader, message, "")
  if not read then return false, failure == TOO_DEEP end
  reader:space()
  if reader.pos <= #text then return false end
  return true, reader.unknown, reader.twice, reader.found, reader.misshapen
end

-- No key to read from a body: its route's path sets none of its fields.
local NO_KEYS = {}

-- The REST route that takes the request's body, and the path; nil for none.
local function body_route(headers)
  local method = headers:get(":method")
  local path = (headers:get(":path") or ""):gsub("%?.*", "")
  for _, route in ipairs(REST_BODIES) do
    if route.method == method and path:find(route.pattern) then return route, path end
  end
  return nil
end

-- The first field the path sets that the body gives another value, by either name: the
-- transcoder would keep the path's silently (under the JSON name, always), so a client would
-- change another record than the one its body names. The key the body gives, and the field.
local function contradicted_field(route, path, found)
  if route.bound == nil then return nil end
  local captures = { path:match(route.bound.capture) }
  for _, field in ipairs(route.bound.fields) do
    local segment = (captures[field.index] or ""):gsub("%%(%x%x)", function(hex)
      return string.char(tonumber(hex, 16))
    end)
    for _, key in ipairs({ field.name, field.json }) do
      if found[key] ~= nil and found[key] ~= segment then return key, field.name end
    end
  end
  return nil
end

-- The first query parameter that names a field the path or the body sets, or one given twice
-- (by either of its names) for a field that is not repeated, where the transcoder would keep the
-- last: its reason, name, message and description; nil if none.
-- True when a query parameter's field path (page_size, product.name) names a field its request
-- message lacks. A path into a message this filter does not describe (a google.protobuf type), or
-- past a scalar, is the transcoder's to judge.
local function unknown_field(message, name)
  local fields = MESSAGES[message]
  for segment in name:gmatch("[^.]+") do
    if fields == nil then return false end
    local entry = fields[segment]
    if entry == nil then return true end
    fields = entry.message and MESSAGES[entry.message] or nil
  end
  return false
end

local function refused_parameter(headers)
  local path = headers:get(":path") or ""
  local route = rest_route(headers)
  if route == nil then return nil end
  local seen = {}
  for _, param in ipairs(query_of(path)) do
    local name = param.name
    if param.bare then
      -- The transcoder skips it: ?in_stock_only%3Dtrue would list every product.
      return "MALFORMED_REQUEST", name,
        "query parameter " .. name .. " has no value: a parameter is written name=value",
        "has no value"
    end
    local why = nil
    if route.body == "*" then why = "the body carries the whole request" end
    for _, taken in ipairs(route.taken) do
      if name == taken or name:sub(1, #taken + 1) == taken .. "." then
        why = why or (taken .. " is set by the path or the body")
      end
    end
    if why then
      return "QUERY_PARAMETER_NOT_ALLOWED", name,
        "query parameter " .. name .. " is not allowed here: " .. why, why
    end
    -- The transcoder would refuse it too, but without naming the field in a BadRequest.
    if unknown_field(route.message, name) then
      return "UNKNOWN_FIELD", name, "unknown query parameter " .. name, "no such field"
    end
    local field = (name:gsub("%u", function(c) return "_" .. c:lower() end))
    if seen[field] and not route.repeated[field] then
      return "DUPLICATE_FIELD", name, "query parameter " .. name .. " is given twice",
        "appears twice"
    end
    seen[field] = true
  end
  return nil
end

local function quote(text)
  return '"' .. text:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

-- `text` in at most `max` UTF-16 units, ending in "…" when cut, as kit/errors.ts clipText cuts a
-- service's: a refusal that quotes a caller's name stays small. Never cuts a character in two.
local function clip(text, max)
  local units, pos, cut = 0, 1, nil
  while pos <= #text do
    local b = text:byte(pos)
    local len = b < 0xC0 and 1 or b < 0xE0 and 2 or b < 0xF0 and 3 or 4
    units = units + (len == 4 and 2 or 1)
    if cut == nil and units > max - 1 then cut = pos end
    if units > max then return text:sub(1, cut - 1) .. "…" end
    pos = pos + len
  end
  return text
end

-- The bounds of a refusal's texts, as a service's (README "Errors").
local MAX_FIELD, MAX_MESSAGE = 200, 1024

-- The largest body this filter waits for: what Envoy buffers for it over HTTP/2 (the stream
-- window). A larger one would be refused 413 in place of the answer.
local BODY_WAIT_MAX = 65536

-- Waits for the request's body when it is small enough (its content-length says so): HTTP/2 lets
-- Envoy answer before it is in, but curl 7.88 (Debian 12's) then often fails with error 92 and
-- shows no answer at all. body() holds the headers back, which respond() needs.
local function wait_for_body(handle)
  local length = tonumber(handle:headers():get("content-length") or "")
  if length ~= nil and length > 0 and length <= BODY_WAIT_MAX then handle:body() end
end

-- Envoy's answer to a call it refuses, readable by a page on an allowed origin: the CORS filter
-- comes later in the chain, so it never sees this answer.
-- A big-endian 32-bit length, as a Connect envelope carries it.
local function be32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
end

local function refuse(handle, grpc_status, headers, body, body_read)
  if not body_read then wait_for_body(handle) end
  local kind = handle:headers():get("content-type") or ""
  if kind:sub(1, 20) == "application/connect+" and headers["content-type"] == "application/json" then
    -- A Connect stream reads its error from its end-of-stream message, under a 200: a client
    -- that got the error's own HTTP status would read only that, as INTERNAL or UNKNOWN.
    local message = '{"error":' .. body .. "}"
    headers[":status"] = "200"
    headers["content-type"] = "application/connect+proto"
    body = string.char(2) .. be32(#message) .. message
  end
  local origin = handle:headers():get("origin")
  if origin ~= nil and CORS_ORIGINS[origin] then
    headers["access-control-allow-origin"] = origin
    headers["access-control-expose-headers"] = CORS_EXPOSE_HEADERS
  end
  handle:streamInfo():dynamicMetadata():set(NAMESPACE, "grpc_status", grpc_status)
  handle:respond(headers, body)
end

-- The codec a Connect call names (application/<codec>, application/connect+<codec>, or a GET's
-- encoding parameter), lowercased and without parameters; nil when it names none.
local function connect_codec(headers, params)
  if query_says(params, "connect", "v1") then
    for _, param in ipairs(params) do
      if param.name == "encoding" then return param.value:lower() end
    end
    return nil
  end
  local kind = headers:get("content-type") or ""
  local codec = kind:match("^application/connect%+([^;%s]*)") or kind:match("^application/([^;%s]*)")
  return codec and codec:lower()
end

-- 415 for a Connect call in any codec but proto, the only one the services speak: the bridge
-- would hand them JSON as if it were protobuf.
local function refuse_connect_codec(handle, headers, params)
  local codec = connect_codec(headers, params)
  if codec == nil or codec == "proto" then return end
  refuse(handle, 12, { [":status"] = "415", ["content-type"] = "application/json" },
    CONNECT_CODEC_REFUSAL)
end

-- Whether unpadded base64url `text` decodes to whole bytes, its last character's spare bits 0, as
-- a strict decoder (the bridge's) requires: a length of 4n+1 never does.
local BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local function whole_bytes(text)
  local rest = #text % 4
  if rest == 0 then return true end
  if rest == 1 then return false end
  local value = BASE64URL:find(text:sub(-1), 1, true) - 1
  return value % (rest == 2 and 16 or 4) == 0
end

-- A Connect GET of an rpc with side effects: 405. The bridge takes any request whose query says
-- connect=v1 for a GET, whatever its method, so any other method with it is refused too (400), as
-- is a GET that gives a query parameter twice. True when refused.
local function refuse_connect_get(handle, headers, params)
  local method = headers:get(":method")
  local by_query = query_says(params, "connect", "v1")
  if method ~= "GET" and not by_query then return false end
  if method ~= "GET" then
    refuse(handle, 3, { [":status"] = "400", ["content-type"] = "application/json" },
      CONNECT_QUERY_REFUSAL)
    return true
  end
  local path = headers:get(":path") or ""
  local rpc = path:gsub("%?.*", "")
  if not CONNECT_GET[rpc] then
    -- A method the edge does not serve: its route's answer, UNKNOWN_METHOD, as for a POST.
    if not CONNECT_RPCS[rpc] then return false end
    refuse(handle, 12, { [":status"] = "405", ["allow"] = "POST", ["content-type"] = "application/json" },
      CONNECT_GET_REFUSAL)
    return true
  end
  local seen = {}
  for _, param in ipairs(params) do
    if seen[param.name] then
      refuse(handle, 3, { [":status"] = "400", ["content-type"] = "application/json" },
        CONNECT_GET_REPEAT_REFUSAL)
      return true
    end
    seen[param.name] = true
  end
  local body = handle:body()
  if body ~= nil and body:length() > 0 then
    refuse(handle, 3, { [":status"] = "400", ["content-type"] = "application/json" },
      CONNECT_GET_BODY_REFUSAL, true)
    return true
  end
  -- Connect's base64 message may come padded. The bridge reads a padded one, or one in another
  -- alphabet, as no message at all, and would call the rpc with an empty request.
  if not query_says(params, "base64", "1") then return false end
  for _, param in ipairs(params) do
    if param.name == "message" then
      local unpadded = param.value:gsub("=?=?$", "", 1)
      if not unpadded:match("^[%w_-]*$") or not whole_bytes(unpadded) then
        refuse(handle, 3, { [":status"] = "400", ["content-type"] = "application/json" },
          CONNECT_MESSAGE_REFUSAL)
        return true
      end
      if unpadded ~= param.value then headers:replace(":path", with_param(path, "message", unpadded)) end
    end
  end
  return false
end

-- The codes whose HTTP status the Connect protocol changed after Envoy's bridge took its table:
-- the bridge's status, and the protocol's now. A 408 told browsers and proxies they may send the
-- request again, which a CreateOrder without a request_id must not be. The edge's own 415 and 405
-- refusals stay as they are.
local CONNECT_STATUS = {
  canceled = { "408", "499" },
  deadline_exceeded = { "408", "504" },
  failed_precondition = { "412", "400" },
  unimplemented = { "404", "501" },
}

-- A Connect unary error body with its message decoded and its detail types unprefixed.
local function repaired_connect_error(text)
  text = text:gsub('"message":"([^"]*)"', function(message)
    local decoded = message:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end)
    return '"message":' .. quote(decoded)
  end)
  return (text:gsub('"type":"type%.googleapis%.com/', '"type":"'))
end

-- A REST refusal that names no field, as a google.rpc.Status JSON body.
local function refuse_rest_request(handle, http_status, code, reason, text, body_read)
  refuse(handle, code, { [":status"] = http_status, ["content-type"] = "application/json" },
    table.concat({
      '{"code":', code, ',"message":', quote(text), ',"details":[',
      '{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"', reason, '",',
      '"domain":"', NAMESPACE, '","metadata":{}}]}',
    }), body_read)
end

-- INVALID_ARGUMENT for a REST call, as a google.rpc.Status JSON body naming the field.
local function refuse_rest(handle, reason, field, text, description, body_read)
  field, text = clip(field, MAX_FIELD), clip(text, MAX_MESSAGE)
  refuse(handle, 3, { [":status"] = "400", ["content-type"] = "application/json" }, table.concat({
    '{"code":3,"message":', quote(text), ',"details":[',
    '{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"', reason, '",',
    '"domain":"', NAMESPACE, '","metadata":{"field":', quote(field), "}},",
    '{"@type":"type.googleapis.com/google.rpc.BadRequest","field_violations":[{"field":',
    quote(field), ',"description":', quote(description), "}]}]}",
  }), body_read)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- A CORS preflight of a Connect GET URL: the bridge would take its query for a call. The
  -- query says nothing to a preflight, so the CORS filter answers it without one.
  local path = headers:get(":path") or ""
  if headers:get(":method") == "OPTIONS" and headers:get("origin")
    and headers:get("access-control-request-method") and path:find("?", 1, true) then
    headers:replace(":path", (path:gsub("%?.*", "")))
  end
  local protocol = protocol_of(headers)
  local metadata = handle:streamInfo():dynamicMetadata()
  metadata:set(NAMESPACE, "protocol", protocol)
  metadata:set(NAMESPACE, "method", headers:get(":method"))
  headers:replace(EDGE_PROTOCOL_HEADER, protocol)
  -- The bridges hold a REST or unary Connect reply whole: a list call's page is asked to fit,
  -- or to keep the smaller size its caller asked for.
  local fits = nil
  if protocol == "rest" then
    fits = REST_PAGE_BYTES
    -- The path the edge span names (http.url), without the caller's query, should the call be
    -- refused before the transcoder replaces it (as observability.ts queryFreeSpans then does).
    if path:find("?", 1, true) then
      headers:replace("x-envoy-original-path", (path:gsub("%?.*", "")))
    end
  elseif protocol == "connect" then
    fits = CONNECT_PAGE_BYTES[handle:streamInfo():protocol()] or CONNECT_SMALLEST_PAGE_BYTES
  end
  local asked = headers:get(PAGE_BYTES_KEY) or ""
  if fits ~= nil and not (asked:match("^%d+$") and #asked <= 10 and tonumber(asked) < tonumber(fits)) then
    headers:replace(PAGE_BYTES_KEY, fits)
  end
  local origin = headers:get("origin")
  if origin ~= nil and CORS_ORIGINS[origin] then metadata:set(NAMESPACE, "cors_origin", origin) end
  if protocol == "connect" then
    -- A streaming call: Envoy's own refusal must be its end-of-stream message (local replies).
    local kind = headers:get("content-type") or ""
    metadata:set(NAMESPACE, "stream", kind:sub(1, 20) == "application/connect+")
    local params = query_of(headers:get(":path") or "")
    if refuse_connect_get(handle, headers, params) then return end
    if headers:get(":method") == "POST" and kind:sub(1, 20) ~= "application/connect+"
      and CONNECT_STREAMS[(path:gsub("%?.*", ""))] then
      return refuse(handle, 12, { [":status"] = "415", ["content-type"] = "application/json" },
        CONNECT_UNARY_ON_STREAM_REFUSAL)
    end
    local timeout = headers:get("connect-timeout-ms")
    if timeout ~= nil and not (timeout:match("^%d+$") and #timeout <= 10) then
      return refuse(handle, 3, { [":status"] = "400", ["content-type"] = "application/json" },
        CONNECT_TIMEOUT_REFUSAL)
    end
    return refuse_connect_codec(handle, headers, params)
  end
  if protocol == "grpc-web" and not GRPC_WEB[headers:get("content-type")] then
    -- The gRPC-Web filter passes it on unchanged, and a service would answer it as native gRPC,
    -- reading the body as protobuf: trailers-only, as a gRPC-Web error is.
    return refuse(handle, 12, {
      [":status"] = "200",
      ["content-type"] = "application/grpc-web+proto",
      ["grpc-status"] = "12",
      ["grpc-message"] = GRPC_WEB_CODEC_REFUSAL.message,
      ["grpc-status-details-bin"] = GRPC_WEB_CODEC_REFUSAL.details,
    })
  end
  if protocol == "grpc-web" and headers:get("content-type"):find("text", 1, true) then
    -- One piece for the gRPC-Web filter to decode (gRPC-Web has no client streams).
    handle:body()
    return
  end
  if protocol ~= "rest" then return end
  local encoding = (headers:get("content-encoding") or "identity"):lower()
  if encoding ~= "identity" then
    -- The transcoder would read the compressed bytes as JSON.
    return refuse_rest_request(handle, "415", 12, "UNSUPPORTED_ENCODING",
      "content-encoding " .. encoding .. " is not supported; send the body uncompressed")
  end
  local reason, parameter, text, description = refused_parameter(headers)
  if reason then return refuse_rest(handle, reason, parameter, text, description) end
  local route, path = body_route(headers)
  local message = route and route.message
  if message == nil and rest_route(headers) ~= nil then
    -- A route without a body: the transcoder would still read one into the request, unchecked.
    local method = headers:get(":method")
    local body = handle:body()
    -- An empty object sets nothing; some clients send one with every request.
    if body ~= nil and body:length() > 0
      and not body:getBytes(0, body:length()):match("^[ \t\r\n]*{[ \t\r\n]*}[ \t\r\n]*$") then
      return refuse_rest_request(handle, "400", 3, "BODY_NOT_ALLOWED",
        method .. " takes no request body here; send its fields in the query", true)
    end
    return
  end
  if message == nil then
    local target = (headers:get(":path") or ""):gsub("%?.*", "")
    if headers:get(":method") ~= "OPTIONS" and target:find("^/[%w_]+%.[%w_.]+/[%w_]+$") then
      -- A gRPC method's path in no protocol Envoy's filters take (no content type, text/plain,
      -- application/proto without connect-protocol-version): grpc-js would answer a bare 415.
      return refuse_rest_request(handle, "415", 12, "UNSUPPORTED_CODEC",
        "this path is a gRPC method: call it over gRPC (application/grpc), gRPC-Web "
          .. "(application/grpc-web+proto) or Connect (application/proto with "
          .. "connect-protocol-version: 1); REST has paths of its own")
    end
    -- The body is in before the call goes on, even where no route takes it: Envoy's 404 would
    -- otherwise answer first (wait_for_body).
    return wait_for_body(handle)
  end
  local body = handle:body()
  if body == nil then return end
  local json, unknown, twice, found, misshapen = misfit_fields(body:getBytes(0, body:length()),
    message, route.bound and route.bound.keys or NO_KEYS)
  if not json then
    local too_deep = unknown
    return refuse_rest_request(handle, "400", 3, "MALFORMED_REQUEST", too_deep
      and ("the request body nests objects and arrays more than " .. MAX_DEPTH .. " deep")
      or "the request body is not JSON (keys in double quotes, no trailing comma, one value)", true)
  end
  if unknown then
    return refuse_rest(handle, "UNKNOWN_FIELD", unknown,
      "unknown field " .. unknown .. " in the request body", "no such field", true)
  end
  if twice then
    return refuse_rest(handle, "DUPLICATE_FIELD", twice,
      "field " .. twice .. " appears twice in the request body", "appears twice", true)
  end
  if misshapen then
    local field, description = misshapen[1], misshapen[2]
    return refuse_rest(handle, "MALFORMED_REQUEST", field,
      "field " .. field .. " of the request body " .. description, description, true)
  end
  local key, name = nil, nil
  if found then key, name = contradicted_field(route, path, found) end
  if key then
    refuse_rest(handle, "MALFORMED_REQUEST", key,
      "the body's " .. key .. " differs from the " .. name .. " the path gives",
      "differs from the path", true)
  end
end

-- A chunk of a Connect stream that ends with its end-of-stream message (flags 0x02), that message
-- repaired as a unary error is; nil for any other chunk. A chunk is taken to start an envelope, as
-- the bridge writes them; one that does not parse to its end is left alone.
local function repaired_end_of_stream(bytes)
  local pos = 1
  while pos + 4 <= #bytes do
    local b1, b2, b3, b4 = bytes:byte(pos + 1, pos + 4)
    local length = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    if bytes:byte(pos) == 2 and pos + 4 + length == #bytes then
      local json = repaired_connect_error(bytes:sub(pos + 5))
      return bytes:sub(1, pos - 1) .. string.char(2) .. be32(#json) .. json
    end
    pos = pos + 5 + length
  end
  return nil
end

local GRPC_HEADERS = {
  "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding", "grpc-accept-encoding",
}

function envoy_on_response(handle)
  local metadata = handle:streamInfo():dynamicMetadata()
  local seen = metadata:get(NAMESPACE) or {}
  if seen.protocol ~= "rest" and seen.protocol ~= "connect" then return end
  local headers = handle:headers()
  -- An answer the transcoder made itself (a body it cannot read) never met the CORS filter,
  -- which comes after it; every other answer to an allowed origin has these already.
  if seen.cors_origin and headers:get("access-control-allow-origin") == nil then
    headers:add("access-control-allow-origin", seen.cors_origin)
    headers:add("access-control-expose-headers", CORS_EXPOSE_HEADERS)
  end
  local status = headers:get("grpc-status")
  if status and seen.grpc_status == nil then
    metadata:set(NAMESPACE, "grpc_status", tonumber(status))
  end
  for _, name in ipairs(GRPC_HEADERS) do headers:remove(name) end
  local kind = headers:get("content-type") or ""
  if seen.protocol == "connect" and kind:sub(1, 20) == "application/connect+" then
    -- A stream: its messages pass as they come; the error at its end is repaired.
    for chunk in handle:bodyChunks() do
      local repaired = repaired_end_of_stream(chunk:getBytes(0, chunk:length()))
      if repaired then chunk:setBytes(repaired) end
    end
    return
  end
  if seen.protocol == "connect" and headers:get(":status") ~= "200"
    and headers:get("content-type") == "application/json" then
    local body = handle:body()
    if body == nil then return end
    local text = body:getBytes(0, body:length())
    -- The first "code" key: a string value holds none unescaped.
    local statuses = CONNECT_STATUS[text:match('"code"%s*:%s*"([%a_]+)"') or ""]
    -- The headers read before body() are stale once it returns.
    if statuses and handle:headers():get(":status") == statuses[1] then
      handle:headers():replace(":status", statuses[2])
    end
    local repaired = repaired_connect_error(text)
    body:setBytes(repaired)
    handle:headers():replace("content-length", tostring(#repaired))
  end
end
