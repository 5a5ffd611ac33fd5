-- A small DEFLATE decoder (RFC 1951) for gRPC messages compressed with "gzip" (RFC 1952) or
-- "deflate" (zlib, RFC 1950), so that lua/health.lua can read the service a compressed health
-- check names. Checksums are not verified; whatever fails to decode, or decodes past `limit`
-- bytes, or takes more than MAX_BLOCKS blocks, gives nil.

local LENGTH_BASE = { 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59,
  67, 83, 99, 115, 131, 163, 195, 227, 258 }
local LENGTH_EXTRA = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4,
  5, 5, 5, 5, 0 }
local DISTANCE_BASE = { 1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385,
  513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577 }
local DISTANCE_EXTRA = { 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10,
  10, 11, 11, 12, 12, 13, 13 }
local CODE_LENGTH_ORDER = { 16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15 }

-- A canonical Huffman code from the code length of each symbol (lengths[0 .. n - 1]).
local function huffman(lengths, n)
  local count, offset, symbol = {}, {}, {}
  for length = 0, 15 do count[length] = 0 end
  for s = 0, n - 1 do count[lengths[s]] = count[lengths[s]] + 1 end
  offset[1] = 0
  for length = 1, 14 do offset[length + 1] = offset[length] + count[length] end
  for s = 0, n - 1 do
    local length = lengths[s]
    if length ~= 0 then
      symbol[offset[length]] = s
      offset[length] = offset[length] + 1
    end
  end
  return { count = count, symbol = symbol }
end

-- The fixed codes, built once: an empty block that uses them is only 10 bits.
local FIXED_LITERALS, FIXED_DISTANCES = (function()
  local lengths = {}
  for s = 0, 287 do
    lengths[s] = (s < 144 and 8) or (s < 256 and 9) or (s < 280 and 7) or 8
  end
  local distances = {}
  for s = 0, 29 do distances[s] = 5 end
  return huffman(lengths, 288), huffman(distances, 30)
end)()

-- A compressor puts a message of up to 64 KB in a few blocks. A body of thousands of empty
-- blocks costs a worker thread CPU for every byte and decodes to nothing.
local MAX_BLOCKS = 64

-- The bytes of the raw DEFLATE stream in `data` from byte `pos`, as a string.
local function inflate(data, pos, limit)
  local buffer, held, out = 0, 0, {}
  local function bits(n)
    while held < n do
      local byte = data:byte(pos)
      if byte == nil then error("truncated") end
      pos = pos + 1
      buffer = buffer + byte * 2 ^ held
      held = held + 8
    end
    local value = buffer % 2 ^ n
    buffer = (buffer - value) / 2 ^ n
    held = held - n
    return value
  end
  local function decode(code)
    local value, first, index = 0, 0, 0
    for length = 1, 15 do
      value = value + bits(1)
      local count = code.count[length]
      if value - count < first then return code.symbol[index + value - first] end
      index = index + count
      first = (first + count) * 2
      value = value * 2
    end
    error("bad code")
  end
  local function put(byte)
    if #out >= limit then error("too large") end
    out[#out + 1] = byte
  end
  local blocks = 0
  repeat
    blocks = blocks + 1
    if blocks > MAX_BLOCKS then error("too many blocks") end
    local last = bits(1)
    local kind = bits(2)
    if kind == 0 then
      buffer, held = 0, 0
      local low, high = data:byte(pos, pos + 1)
      if high == nil then error("truncated") end
      pos = pos + 4
      for _ = 1, low + high * 256 do
        local byte = data:byte(pos)
        if byte == nil then error("truncated") end
        put(byte)
        pos = pos + 1
      end
    elseif kind == 1 or kind == 2 then
      local literals, distances
      if kind == 1 then
        literals, distances = FIXED_LITERALS, FIXED_DISTANCES
      else
        local nlen, ndist, ncode = bits(5) + 257, bits(5) + 1, bits(4) + 4
        local lengths = {}
        for i = 1, 19 do lengths[CODE_LENGTH_ORDER[i]] = i <= ncode and bits(3) or 0 end
        local code = huffman(lengths, 19)
        local all, i = {}, 0
        while i < nlen + ndist do
          local symbol = decode(code)
          local repeat_of, times = nil, 1
          if symbol < 16 then
            repeat_of = symbol
          elseif symbol == 16 then
            if i == 0 then error("no length to repeat") end
            repeat_of, times = all[i - 1], 3 + bits(2)
          elseif symbol == 17 then
            repeat_of, times = 0, 3 + bits(3)
          else
            repeat_of, times = 0, 11 + bits(7)
          end
          for _ = 1, times do
            all[i] = repeat_of
            i = i + 1
          end
        end
        local literal_lengths, distance_lengths = {}, {}
        for s = 0, nlen - 1 do literal_lengths[s] = all[s] end
        for s = 0, ndist - 1 do distance_lengths[s] = all[nlen + s] end
        literals, distances = huffman(literal_lengths, nlen), huffman(distance_lengths, ndist)
      end
      while true do
        local symbol = decode(literals)
        if symbol < 256 then
          put(symbol)
        elseif symbol == 256 then
          break
        else
          local k = symbol - 256
          if LENGTH_BASE[k] == nil then error("bad length") end
          local length = LENGTH_BASE[k] + bits(LENGTH_EXTRA[k])
          local d = decode(distances) + 1
          if DISTANCE_BASE[d] == nil then error("bad distance") end
          local distance = DISTANCE_BASE[d] + bits(DISTANCE_EXTRA[d])
          if distance > #out then error("distance too far") end
          for _ = 1, length do put(out[#out + 1 - distance]) end
        end
      end
    else
      error("bad block")
    end
  until last == 1
  local parts = {}
  for i = 1, #out, 4096 do
    parts[#parts + 1] = string.char(unpack(out, i, math.min(i + 4095, #out)))
  end
  return table.concat(parts)
end

-- Where the DEFLATE stream of a gzip member starts, past its header and optional fields.
local function gzip_start(data)
  local id1, id2, method, flags = data:byte(1, 4)
  if id1 ~= 31 or id2 ~= 139 or method ~= 8 then error("not gzip") end
  local pos = 11
  if flags % 8 >= 4 then
    local low, high = data:byte(pos, pos + 1)
    pos = pos + 2 + low + high * 256
  end
  for _, flag in ipairs({ 8, 16 }) do
    if flags % (flag * 2) >= flag then pos = (data:find("\0", pos, true) or #data) + 1 end
  end
  if flags % 4 >= 2 then pos = pos + 2 end
  return pos
end

-- The message `data` held, compressed with the gRPC encoding `encoding`; nil when it cannot
-- be read or would pass `limit` bytes.
local function decompressed(data, encoding, limit)
  local ok, result = pcall(function()
    if encoding == "gzip" then return inflate(data, gzip_start(data), limit) end
    if encoding == "deflate" then return inflate(data, 3, limit) end
    return nil
  end)
  return ok and result or nil
end
