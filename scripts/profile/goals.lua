-- wrk script for scripts/profile/node-goals.sh: the reference chat request, streamed when STREAM=1.
wrk.method = "POST"
local stream = os.getenv("STREAM") == "1"
wrk.body = '{"model":"ref-model","messages":[{"role":"user","content":"Why is the sky blue?"}],"max_tokens":32,"stream":'
  .. (stream and "true" or "false") .. '}'
wrk.headers["Content-Type"] = "application/json"
