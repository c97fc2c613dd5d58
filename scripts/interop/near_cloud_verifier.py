#!/usr/bin/env python3
"""Runs NEAR AI's own verifier (github.com/nearai/nearai-cloud-verifier, unmodified) against a
Cloister node: `py/chat_verifier.py`'s streamed and plain examples, then `py/model_verifier.py`'s
report checks on the node's report (flat, and wrapped as `model_attestations[]`).

Usage:
  near_cloud_verifier.py NEAR_CHECKOUT BASE_URL MODEL [--offline]

NEAR_CHECKOUT is a clone of nearai-cloud-verifier; its requirements.txt must be installed in this
Python. Nothing of NEAR's code is changed or copied: its modules are imported from the checkout.

Online (a real TDX node, internet access) their code runs as it is. `--offline` replaces exactly
two of their functions, the ones that call out: `check_tdx_quote` (dcap-qvl's collateral fetch
from Intel's PCS) and `check_gpu` (NVIDIA's NRAS). The replacement still tries dcap-qvl's full
verification and prints its verdict (a simulated quote is refused on its signature), then hands
NEAR's `check_report_data` the report_data and MR_CONFIG_ID that dcap-qvl *parses* from the quote.
It exits 1 if any line NEAR's code prints says False.
"""

import asyncio
import contextlib
import io
import json
import secrets
import sys


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    checkout, base_url, model = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
    offline = "--offline" in sys.argv[4:]
    import os

    os.environ["BASE_URL"] = base_url
    os.environ.setdefault("API_KEY", "sk-cloister-interop")
    sys.path.insert(0, os.path.join(checkout, "py"))
    import chat_verifier  # noqa: E402  (NEAR's module, unmodified)
    import model_verifier  # noqa: E402

    if offline:
        import dcap_qvl

        async def parsed_quote(attestation):
            raw = bytes.fromhex(attestation["intel_quote"])
            try:
                await dcap_qvl.get_collateral_and_verify(raw)
                print("dcap-qvl verify: accepted")
            except Exception as e:  # noqa: BLE001 - printed, the verdict is the point
                print(f"dcap-qvl verify (offline, refused as expected for a simulated quote): {e}")
            report = dcap_qvl.parse_quote(raw).report
            print("dcap-qvl parsed the quote: TD report, MRTD", bytes(report.mr_td).hex()[:16] + "...")
            return {
                "quote": {"body": {"reportdata": bytes(report.report_data).hex(),
                                   "mrconfig": bytes(report.mr_config_id).hex()}},
                "verified": False,
            }

        def gpu(attestation, request_nonce):
            payload = attestation.get("nvidia_payload")
            if not payload:
                print("GPU evidence: none (a CPU node); NRAS not called offline")
                return None
            nonce = json.loads(payload)["nonce"]
            print("GPU payload nonce matches request_nonce:", nonce.lower() == request_nonce.lower())
            return None

        for module in (chat_verifier, model_verifier):
            module.check_tdx_quote = parsed_quote
            module.check_gpu = gpu

    out = io.StringIO()

    async def run():
        await chat_verifier.streaming_example(model)
        await chat_verifier.non_streaming_example(model)
        for wrapped in (False, True):
            nonce = secrets.token_hex(32)
            url = f"/v1/attestation/report?model={model}&nonce={nonce}&signing_algo=ecdsa"
            if wrapped:
                url += "&format=near"  # wire::REPORT_FORMAT_NEAR
            import requests

            report = requests.get(base_url + url, timeout=30).json()
            attestation = report["model_attestations"][0] if wrapped else report
            print(f"\n--- model_verifier on the {'wrapped' if wrapped else 'flat'} report ---")
            intel_result = await model_verifier.check_tdx_quote(attestation)
            model_verifier.check_report_data(attestation, nonce, intel_result)

    class Tee(io.TextIOBase):
        def write(self, s):
            sys.__stdout__.write(s)
            out.write(s)
            return len(s)

    with contextlib.redirect_stdout(Tee()):
        asyncio.run(run())
    failed = [line for line in out.getvalue().splitlines() if line.rstrip().endswith(": False")]
    if failed:
        print("\nFAILED:", *failed, sep="\n  ")
        return 1
    print("\nevery check NEAR's verifier printed is True")
    return 0


if __name__ == "__main__":
    sys.exit(main())
