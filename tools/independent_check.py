#!/usr/bin/env python3
"""An independent check of a Cloister node's report and answers, the way NEAR AI's and Phala's
verifier scripts check theirs: hashlib and eth_account only, nothing from Cloister.

It reads what a node served (saved to files by the caller) and checks, computing every offset and
hash itself:

  report-data REPORT NONCE
      REPORT is the flat report or NEAR's wrapper ({"model_attestations": [report, ...]}). For each
      report: its TDX quote's report_data (read at the offset the quote header implies) is the
      signing address right-padded with zeros to 32 bytes, then the 32-byte NONCE; request_nonce
      is NONCE.
  answer REQUEST RESPONSE SIGNATURE [--address ADDR] [--sse]
      SIGNATURE is the JSON of GET /v1/signature/{id}. Its text is
      sha256hex(REQUEST bytes) ":" sha256hex(RESPONSE bytes), and the EIP-191 signature over it
      recovers to its signing_address (and to ADDR, the attested address, when given). With --sse,
      RESPONSE is a whole event-stream body: it must end with "data: [DONE]" and carry no event
      after it, and the line-by-line reconstruction NEAR's chat_verifier.py hashes must equal it.

Prints one JSON object {"ok": bool, "checks": {name: bool}, ...} and exits 0 only when every check
passed (1 when one failed, 2 on bad input).
"""

import hashlib
import json
import sys

from eth_account import Account
from eth_account.messages import encode_defunct

# Intel's quote layout: a 48-byte header; v4 puts the TD report right after it, v5 puts a body
# descriptor (u16 type, u32 size) first. report_data is 520 bytes into a TD report (TD 1.0 and 1.5).
HEADER_LEN = 48
V5_BODY_DESCRIPTOR_LEN = 6
TEE_TYPE_TDX = 0x81
REPORT_DATA_OFFSET_IN_TD_REPORT = 520
REPORT_DATA_LEN = 64


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def report_data_of(quote):
    """The 64 report_data bytes of a TDX quote, located from its header alone."""
    if len(quote) < HEADER_LEN:
        raise ValueError("quote shorter than its header")
    version = int.from_bytes(quote[0:2], "little")
    tee_type = int.from_bytes(quote[4:8], "little")
    if tee_type != TEE_TYPE_TDX:
        raise ValueError(f"not a TDX quote (tee_type {tee_type:#x})")
    if version == 4:
        body = HEADER_LEN
    elif version == 5:
        body = HEADER_LEN + V5_BODY_DESCRIPTOR_LEN
    else:
        raise ValueError(f"unsupported quote version {version}")
    start = body + REPORT_DATA_OFFSET_IN_TD_REPORT
    end = start + REPORT_DATA_LEN
    if len(quote) < end:
        raise ValueError("quote too short for a TD report")
    return quote[start:end]


def check_one_report(report, nonce_hex):
    checks = {}
    quote = bytes.fromhex(report["intel_quote"].removeprefix("0x"))
    report_data = report_data_of(quote)
    address = bytes.fromhex(report["signing_address"].removeprefix("0x"))
    nonce = bytes.fromhex(nonce_hex.removeprefix("0x"))
    checks["signing_algo is ecdsa"] = report.get("signing_algo", "ecdsa").lower() == "ecdsa"
    checks["address is 20 bytes"] = len(address) == 20
    checks["nonce is 32 bytes"] = len(nonce) == 32
    checks["report_data[0..32] = padded signing address"] = report_data[:32] == address.ljust(32, b"\0")
    checks["report_data[32..64] = nonce"] = report_data[32:64] == nonce
    checks["request_nonce = nonce"] = report.get("request_nonce", "").lower() == nonce.hex()
    return checks, report_data.hex()


def cmd_report_data(path, nonce_hex):
    with open(path, "rb") as f:
        doc = json.load(f)
    if "model_attestations" in doc:
        reports = doc["model_attestations"]
        shape = "near"
    else:
        reports = [doc]
        shape = "flat"
    checks = {"at least one report": isinstance(reports, list) and len(reports) > 0}
    data = []
    for i, report in enumerate(reports if checks["at least one report"] else []):
        one, report_data = check_one_report(report, nonce_hex)
        data.append(report_data)
        for name, ok in one.items():
            checks[f"[{i}] {name}"] = ok
    return {"shape": shape, "checks": checks, "report_data": data}


def recover(text, signature):
    return Account.recover_message(encode_defunct(text=text), signature=signature)


def sse_reconstruction(body):
    """What NEAR's chat_verifier.py hashes: each line of the body followed by a newline."""
    text = body.decode("utf-8")
    return "".join(line + "\n" for line in text.splitlines()).encode("utf-8")


def cmd_answer(request_path, response_path, signature_path, address, sse):
    with open(request_path, "rb") as f:
        request = f.read()
    with open(response_path, "rb") as f:
        response = f.read()
    with open(signature_path, "rb") as f:
        record = json.load(f)
    text = record["text"]
    expected = f"{sha256_hex(request)}:{sha256_hex(response)}"
    recovered = recover(text, record["signature"])
    checks = {
        "signed text = sha256(request):sha256(response)": text == expected,
        "signature recovers to its signing_address": recovered.lower()
        == record["signing_address"].lower(),
    }
    if address is not None:
        checks["signature recovers to the attested address"] = recovered.lower() == address.lower()
    if sse:
        checks["stream ends with data: [DONE]"] = response.endswith(b"data: [DONE]\n\n")
        checks["no event after [DONE]"] = response.count(b"data: [DONE]") == 1
        checks["no named event"] = b"\nevent:" not in response and not response.startswith(b"event:")
        checks["NEAR's line-by-line body hashes the same"] = sha256_hex(sse_reconstruction(response)) == sha256_hex(response)
    return {"checks": checks, "text": text, "expected": expected, "recovered": recovered}


def main(argv):
    try:
        if len(argv) == 3 and argv[0] == "report-data":
            result = cmd_report_data(argv[1], argv[2])
        elif len(argv) >= 4 and argv[0] == "answer":
            rest = argv[4:]
            address = None
            sse = False
            while rest:
                if rest[0] == "--address" and len(rest) >= 2:
                    address = rest[1]
                    rest = rest[2:]
                elif rest[0] == "--sse":
                    sse = True
                    rest = rest[1:]
                else:
                    raise ValueError(f"unknown argument {rest[0]!r}")
            result = cmd_answer(argv[1], argv[2], argv[3], address, sse)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 2
    result["ok"] = all(result["checks"].values())
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
