-- grpc.health.v1 by service name at the edge, and the gRPC status each call ended with.
--
-- Health/Check and Health/Watch name the service in their body, which Envoy's routes cannot see:
-- this reads the name from the request (one gRPC frame, after the gRPC-Web and Connect bridges
-- made it gRPC) and, for a public service, sets the header that routes the call to the cluster
-- serving it, also when the message is compressed (gzip or deflate). Unknown names go where ""
-- goes, which answers NOT_FOUND for them.
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

-- The string in field 1 (HealthCheckRequest.service) of `message`.
local function requested_service(message)
  if message == nil then return nil end
  local pos, name = 1, ""
  while pos <= #message do
    local tag = message:byte(pos)
    local length, shift = 0, 0
    pos = pos + 1
    repeat
      local b = message:byte(pos)
      if b == nil then return nil end
      length = length + (b % 128) * 2 ^ shift
      shift = shift + 7
      pos = pos + 1
    until b < 128
    if tag == 10 then name = message:sub(pos, pos + length - 1) end
    if tag % 8 ~= 2 then return nil end
    pos = pos + length
  end
  return name
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove(EDGE_PROTOCOL_HEADER)
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
    for _ in handle:bodyChunks() do end
    local trailers = handle:trailers()
    status = trailers and trailers:get("grpc-status")
  end
  if status then
    handle:streamInfo():dynamicMetadata():set("shopmesh.edge", "grpc_status", tonumber(status))
  end
end
