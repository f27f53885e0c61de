-- wrk script for benches/load/run.sh.
--
-- WRK_TOKENS=N (N > 0): every request carries "X-Session-Token: <WRK_PREFIX>-<i>", i rotating over
-- N tokens (each thread starts at a different offset). WRK_TOKENS=0 or unset: wrk's static request
-- (no request() function, so no Lua per request).
--
-- done() prints one line "JSON:{...}" with requests, errors and latency percentiles (microseconds);
-- run.sh reads that line. wrk counts a status >= 400 in errors.status (the non-2xx check).

local ntokens = tonumber(os.getenv("WRK_TOKENS") or "0") or 0
local prefix = os.getenv("WRK_PREFIX") or "tok"

if ntokens > 0 then
   local next_thread_id = 0

   function setup(thread)
      thread:set("thread_id", next_thread_id)
      next_thread_id = next_thread_id + 1
   end

   local requests = {}
   local i = 0

   function init(args)
      for t = 1, ntokens do
         requests[t] = wrk.format(nil, nil, { ["X-Session-Token"] = prefix .. "-" .. (t - 1) })
      end
      i = ((thread_id or 0) * 7919) % ntokens
   end

   function request()
      i = i % ntokens + 1
      return requests[i]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'JSON:{"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
