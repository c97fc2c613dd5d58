//! NVIDIA SPDM evidence and PEM certificate chains from arbitrary bytes, and the GPU payload JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cloister_attest::gpu::spdm::parse(data);
    let split = data.len() / 2;
    let (pem, spdm) = data.split_at(split);
    let _ = cloister_attest::gpu::verify_device(pem, spdm, &[0u8; 32], 1_750_000_000);
    if let Ok(text) = std::str::from_utf8(data) {
        let v = cloister_attest::gpu::verify_gpu_payload(text, &[0u8; 32], 1_750_000_000);
        let _ = v.passed();
    }
});
