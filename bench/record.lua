-- wrk script for events.record: each request records EVENTS counter
-- events spread over 100 metrics. Usage (bench/README.md):
--   wrk -t2 -c64 -d10s -s bench/record.lua http://127.0.0.1:8080/rpc -- 1
local events = 1

function init(args)
    events = tonumber(args[1] or "1")
    local parts = {}
    for i = 1, events do
        parts[i] = string.format(
            '{"name":"bench.c%d","type":"counter","value":1}', i % 100)
    end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = '{"jsonrpc":"2.0","id":1,"method":"events.record",' ..
        '"params":{"events":[' .. table.concat(parts, ",") .. ']}}'
end

function response(status, headers, body)
    if status ~= 200 or not string.find(body, '"accepted"', 1, true) then
        error("bad answer: " .. status .. " " .. body)
    end
end
