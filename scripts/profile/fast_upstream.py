# A minimal OpenAI-shaped upstream for profiling the node: keep-alive HTTP/1.1, fixed answers,
# no work. Not a test double of anything the tests use; scripts/profile/node-cpu.sh starts it.
import asyncio, json, sys
CHAT = json.dumps({"id":"chatcmpl-up","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today? I am a small fixed answer of moderate length."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":18,"total_tokens":30}}).encode()
MODELS = json.dumps({"object":"list","data":[{"id":"m","object":"model","owned_by":"x"}]}).encode()
def resp(body):
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0: return
            head = self.buf[:i].decode("latin1"); n = 0
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length": n = int(v)
            if len(self.buf) < i + 4 + n: return
            self.buf = self.buf[i + 4 + n:]
            self.t.write(resp(MODELS if head.startswith("GET") else CHAT))
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await s.serve_forever()
asyncio.run(main())
