-- wrk script: rotate through many API keys, one per request.
-- Usage: wrk -s bench/rotate.lua URL -- KEYS_FILE
-- Each wrk thread starts at a different offset and walks the file in order,
-- so with 1,000 keys every key is used about every 1,000th request.
-- The requests are built once, in init(), so rotating costs wrk nothing per request.

local requests = {}
local n = 0
local i = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk -s rotate.lua URL -- KEYS_FILE")
  end
  for key in io.lines(path) do
    if key ~= "" then
      n = n + 1
      requests[n] = wrk.format("GET", nil, { ["X-API-Key"] = key })
    end
  end
  if n == 0 then
    error("no keys in " .. path)
  end
  i = math.random(n) - 1
end

function request()
  i = i % n + 1
  return requests[i]
end
