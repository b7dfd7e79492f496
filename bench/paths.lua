-- wrk script for `python -m bench.run`.
--
-- Why: the proxies under test route by a hash of the request path, so every request must not
-- carry the same path or all of them land on one backend. We cycle through a fixed set of
-- distinct paths (/bench/1 .. /bench/N, no query string: HAProxy's `balance uri` ignores the
-- query unless told otherwise, so a query-only key would not spread there). The requests are
-- formatted once in init(), so request() costs wrk almost nothing: wrk shares a core with the
-- backends and must not become the bottleneck.
--
-- done() prints one machine-readable line (prefix BENCH_WRK_JSON) so the harness does not have
-- to parse wrk's human output, whose units change with magnitude.

local npaths = 4096
local reqs = {}
local idx = 0

function init(args)
   if args[1] ~= nil then
      npaths = tonumber(args[1])
   end
   for i = 1, npaths do
      reqs[i] = wrk.format("GET", "/bench/" .. i)
   end
   -- Threads (if -t > 1) start at different points of the cycle.
   idx = math.random(0, npaths - 1)
end

function request()
   idx = idx + 1
   if idx > npaths then
      idx = 1
   end
   return reqs[idx]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
