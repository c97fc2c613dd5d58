wrk.method = "POST"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32}'
wrk.headers["Content-Type"] = "application/json"
