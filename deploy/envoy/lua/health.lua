-- grpc.health.v1 by service name at the edge, and the gRPC status each call ended with.
--
-- Health/Check and Health/Watch name the service in their body, which Envoy's routes cannot see:
-- this reads the name from the request (one gRPC frame, after the gRPC-Web and Connect bridges
-- made it gRPC) and, for a public service, sets the header that routes the call to the cluster
-- serving it, also when the message is compressed (gzip or deflate). Unknown names go where ""
-- goes, which answers NOT_FOUND for them.
--
-- Health/List has no name to route by, and each cluster knows only its own services: the call
-- goes where "" goes, and in its answer the statuses of every public service, asked of each
-- cluster in turn, replace that cluster's own. So each name is listed with what Check through
-- the edge answers for it; the public services of a cluster that cannot answer are NOT_SERVING.
--
-- On every response it records the gRPC status the upstream side ended with (trailers-only
-- headers, else the trailers) as dynamic metadata shopmesh.edge grpc_status, for the access log:
-- gRPC-Web and Connect move it into the body, and REST into the HTTP status, before the log.
-- Envoy skips this filter for native gRPC calls other than health calls: lua/edge.lua marks every
-- other call with EDGE_PROTOCOL_HEADER, which this filter removes before the call goes upstream.
--
-- HEALTH_CLUSTERS, HEALTH_HEADER and EDGE_PROTOCOL_HEADER are defined above this file by
-- deploy/envoy/config.ts.

local HEALTH_PATHS = {
  ["/grpc.health.v1.Health/Check"] = true,
  ["/grpc.health.v1.Health/Watch"] = true,
}
local LIST_PATH = "/grpc.health.v1.Health/List"
-- HealthCheckResponse.ServingStatus.NOT_SERVING
local NOT_SERVING = 2

-- The message of the first gRPC frame in `bytes`, decompressed with `encoding` (grpc-encoding)
-- when its flag says so (lua/inflate.lua); nil when it cannot be read.
local function first_message(bytes, encoding)
  if #bytes < 5 then return nil end
  local flag, b1, b2, b3, b4 = bytes:byte(1, 5)
  local message = bytes:sub(6, 5 + ((b1 * 256 + b2) * 256 + b3) * 256 + b4)
  if flag == 0 then return message end
  if flag == 1 then return decompressed(message, encoding, 65536) end
  return nil
end

-- Each field of `message` in turn: its number, its wire type, and its value (a number for a
-- varint, the bytes of a length-delimited field, nil for a fixed 32- or 64-bit one or a group);
-- nil at the end, and false at what cannot be read, after which it reads nothing more.
local function fields(message)
  local pos = 1
  local function varint()
    local value, shift = 0, 0
    repeat
      local b = message:byte(pos)
      if b == nil then return nil end
      value = value + (b % 128) * 2 ^ shift
      shift = shift + 7
      pos = pos + 1
    until b < 128
    return value
  end
  local function unreadable()
    pos = #message + 1
    return false
  end
  -- The value of a field of `number` and `wire` at pos, read past: true and the value, or false.
  -- A group (wire type 3) is read to its end-group tag, as the service's decoder reads past it.
  local function value_of(number, wire, depth)
    if wire == 0 then
      local value = varint()
      return value ~= nil, value
    end
    local fixed = (wire == 1 and 8) or (wire == 5 and 4) or nil
    if fixed then
      pos = pos + fixed
      return pos - 1 <= #message, nil
    end
    if wire == 3 then
      -- As deep as the service's decoder reads: a group and 100 more within it.
      if depth > 100 then return false end
      while true do
        local key = varint()
        if key == nil then return false end
        local inner, kind = math.floor(key / 8), key % 8
        if kind == 4 then return inner == number, nil end
        if not value_of(inner, kind, depth + 1) then return false end
      end
    end
    if wire ~= 2 then return false end
    local length = varint()
    if length == nil or pos + length - 1 > #message then return false end
    pos = pos + length
    return true, message:sub(pos - length, pos - 1)
  end
  return function()
    if pos > #message then return nil end
    local key = varint()
    if key == nil then return unreadable() end
    local number, wire = math.floor(key / 8), key % 8
    local ok, value = value_of(number, wire, 0)
    if not ok then return unreadable() end
    return number, wire, value
  end
end

-- The string in field 1 (HealthCheckRequest.service) of `message`: the last one given, as the
-- service's decoder takes it. Nil when a field cannot be read: the call then goes where ""
-- goes, whose service refuses the message or answers for a name it does not serve.
local function requested_service(message)
  if message == nil then return nil end
  local name = ""
  for number, wire, value in fields(message) do
    if number == false then return nil end
    if number == 1 and wire == 2 then name = value end
  end
  return name
end

-- ListResponse.statuses (map<string, HealthCheckResponse>, field 1) as name -> status number.
local function listed_statuses(message)
  local statuses = {}
  for number, wire, entry in fields(message) do
    if number == 1 and wire == 2 then
      local name, status = "", 0
      for key, kind, value in fields(entry) do
        if key == 1 and kind == 2 then name = value end
        if key == 2 and kind == 2 then
          for field, wire_type, code in fields(value) do
            if field == 1 and wire_type == 0 then status = code end
          end
        end
      end
      statuses[name] = status
    end
  end
  return statuses
end

local function varint_bytes(value)
  local out = {}
  repeat
    local low = value % 128
    value = math.floor(value / 128)
    out[#out + 1] = string.char(value > 0 and low + 128 or low)
  until value == 0
  return table.concat(out)
end

local function length_delimited(number, bytes)
  return varint_bytes(number * 8 + 2) .. varint_bytes(#bytes) .. bytes
end

-- A ListResponse with `statuses` (name -> status), as one uncompressed gRPC frame.
local function list_frame(statuses)
  local names = {}
  for name in pairs(statuses) do names[#names + 1] = name end
  table.sort(names)
  local entries = {}
  for _, name in ipairs(names) do
    local response = varint_bytes(8) .. varint_bytes(statuses[name])
    entries[#entries + 1] =
      length_delimited(1, length_delimited(1, name) .. length_delimited(2, response))
  end
  local message = table.concat(entries)
  local length = #message
  local prefix = { 0 }
  for i = 3, 0, -1 do prefix[#prefix + 1] = math.floor(length / 256 ^ i) % 256 end
  return string.char(unpack(prefix)) .. message
end

-- What one cluster lists, by Health/List on one of its replicas; nil when it cannot answer.
local function cluster_statuses(handle, cluster)
  local headers, body = handle:httpCall(cluster, {
    [":method"] = "POST",
    [":path"] = LIST_PATH,
    [":authority"] = cluster,
    ["content-type"] = "application/grpc",
    ["te"] = "trailers",
  }, "\0\0\0\0\0", 1000)
  if headers[":status"] ~= "200" or headers["grpc-status"] ~= nil or body == nil then
    return nil
  end
  local message = first_message(body, nil)
  return message and listed_statuses(message)
end

-- Every public service's status, asked of the cluster serving it.
local function public_statuses(handle)
  local statuses, clusters = {}, {}
  for _, cluster in pairs(HEALTH_CLUSTERS) do clusters[cluster] = true end
  for cluster in pairs(clusters) do
    local listed = cluster_statuses(handle, cluster)
    for service, serving_cluster in pairs(HEALTH_CLUSTERS) do
      if serving_cluster == cluster then
        statuses[service] = (listed and listed[service]) or NOT_SERVING
      end
    end
  end
  return statuses
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove(EDGE_PROTOCOL_HEADER)
  if headers:get(":path") == LIST_PATH then
    handle:streamInfo():dynamicMetadata():set("shopmesh.edge", "health_list", true)
    return
  end
  if not HEALTH_PATHS[headers:get(":path")] then return end
  headers:remove(HEALTH_HEADER)
  local encoding = headers:get("grpc-encoding")
  local body = handle:body()
  if body == nil then return end
  local message = first_message(body:getBytes(0, body:length()), encoding)
  local cluster = HEALTH_CLUSTERS[requested_service(message) or ""]
  if cluster then
    -- Objects taken before body() are out of scope once it has waited for the body.
    handle:headers():add(HEALTH_HEADER, cluster)
    handle:clearRouteCache()
  end
end

function envoy_on_response(handle)
  local status = handle:headers():get("grpc-status")
  if status == nil then
    local kind = handle:headers():get("content-type") or ""
    if kind:sub(1, 16) ~= "application/grpc" then return end
    local edge = handle:streamInfo():dynamicMetadata():get("shopmesh.edge")
    if edge and edge.health_list then
      local encoding = handle:headers():get("grpc-encoding")
      local body = handle:body()
      local routed = first_message(body:getBytes(0, body:length()), encoding)
      local trailers = handle:trailers()
      status = trailers and trailers:get("grpc-status")
      if status == "0" and routed then
        local statuses = public_statuses(handle)
        statuses[""] = listed_statuses(routed)[""] or NOT_SERVING
        -- The calls waited, and objects taken before a wait are out of scope after it.
        handle:body():setBytes(list_frame(statuses))
      end
    else
      for _ in handle:bodyChunks() do end
      local trailers = handle:trailers()
      status = trailers and trailers:get("grpc-status")
    end
  end
  if status then
    handle:streamInfo():dynamicMetadata():set("shopmesh.edge", "grpc_status", tonumber(status))
  end
end
