#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, seeded from the real attestation corpus
# (../shared/testdata/attestation, copied into fuzz/corpus/ at run time, never committed) and from the
# small hand-made inputs committed under fuzz/corpus/<target>/own-*.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets it pass
# its nightly-only flags. Usage: fuzz/run.sh [SECONDS] [TARGET...]
# CLOISTER_REQUIRE_CORPUS=1: a missing attestation corpus is an error, not a run on the committed
# inputs alone.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(quote eventlog spdm report envelope sse_upstream sse_client openai_request)
data=${CLOISTER_ATTESTATION_TESTDATA:-../../shared/testdata/attestation}
seed() { # target, files...
  local t=$1; shift; mkdir -p "corpus/$t"
  for f in "$@"; do [ -f "$f" ] && cp "$f" "corpus/$t/$(sha1sum "$f" | cut -c1-40)"; done; return 0
}
if [ -d "$data" ]; then
  seed quote "$data"/dcap-qvl/sgx_quote "$data"/dcap-qvl/tdx_quote "$data"/dcap-qvl/tdx-quote.hex \
    "$data"/go-tdx-guest/tdx_prod_quote_SPR_E4.dat "$data"/go-tdx-guest/quote_v5_sample.dat
  python3 - "$data" corpus <<'PY'
import hashlib, json, os, sys
data, out = sys.argv[1], sys.argv[2]
def put(target, text):
    b = text.encode() if isinstance(text, str) else text
    os.makedirs(f"{out}/{target}", exist_ok=True)
    open(f"{out}/{target}/{hashlib.sha1(b).hexdigest()}", "wb").write(b)
rep = json.load(open(f"{data}/dstack/verifier_quote-report.json"))
put("eventlog", rep["event_log"] if isinstance(rep["event_log"], str) else json.dumps(rep["event_log"]))
near = json.load(open(f"{data}/nearai-cloud-verifier/nearai_cloud_report_openai_gpt_oss_120b.json"))
m = near["model_attestations"][0]
put("report", json.dumps(m))
put("spdm", m["nvidia_payload"])
PY
elif [ "${CLOISTER_REQUIRE_CORPUS:-}" = 1 ]; then
  echo "fuzz: attestation corpus not found at $data and CLOISTER_REQUIRE_CORPUS=1" >&2
  exit 1
else
  echo "fuzz: corpus not found at $data; using the committed inputs only" >&2
fi
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${secs}s"
  mkdir -p "corpus/$t"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 2>&1 | tail -5
done
