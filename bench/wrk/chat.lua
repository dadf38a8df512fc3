-- wrk script: POST one small chat request, the same body hey and the Go
-- load generator send. The body file is named by BENCH_BODY (default
-- bench/wrk/chat.json, relative to the repository root). Every request
-- carries X-Request-Id "wrk", so the harness can count these requests among
-- gptapi's records.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Request-Id"] = "wrk"
local path = os.getenv("BENCH_BODY") or "bench/wrk/chat.json"
local f = assert(io.open(path, "rb"))
wrk.body = f:read("*a")
f:close()
