//! The binary's commands end to end: refusal without a TEE, the settings file, the demo.

use crate::{cloister, model_path};

#[test]
fn node_refuses_to_start_without_a_tee_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let out = cloister()
        .args([
            "node",
            "run",
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--upstream-model",
            "m",
        ])
        .arg("--dstack-socket")
        .arg(dir.path().join("no-such.sock"))
        .arg("--configfs-root")
        .arg(dir.path().join("no-such-configfs"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a TEE: {err}");
    assert!(
        err.contains("--dev-simulated-tee"),
        "message should name the dev flag: {err}"
    );
}

#[test]
fn config_file_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nmodle = \"x\"\n").unwrap();
    let out = cloister()
        .args(["node", "run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("node.toml") && err.contains("modle"), "{err}");
}

#[test]
fn a_flag_wins_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    let from_file = dir.path().join("from-file.gguf");
    let from_flag = dir.path().join("from-flag.gguf");
    std::fs::write(
        &cfg,
        format!(
            "dev_simulated_tee = true\nlisten = \"127.0.0.1:0\"\nmodel = {:?}\n",
            from_file.display().to_string()
        ),
    )
    .unwrap();
    let out = cloister()
        .args(["node", "run", "--config"])
        .arg(&cfg)
        .arg("--model")
        .arg(&from_flag)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a model file that does not exist: {err}"
    );
    // The file's settings apply (the simulated TEE, so the failure is the engine's), and the
    // model is the flag's, not the file's.
    assert!(err.contains("from-flag.gguf"), "{err}");
    assert!(!err.contains("from-file.gguf"), "{err}");
}

#[test]
fn verify_quote_refuses_a_simulated_quote_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let rd = cloister_types::ReportData::new(
        cloister_types::Address::repeat_byte(0x11),
        cloister_types::Nonce([0x22; 32]),
    );
    let quote = cloister_attest::simulated::simulated_quote(&rd);
    let path = dir.path().join("sim.quote");
    std::fs::write(&path, &quote).unwrap();
    let refused = cloister()
        .arg("verify-quote")
        .arg(&path)
        .args(["--at", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(text.contains("not simulated"), "{text}");
    let allowed = cloister()
        .arg("verify-quote")
        .arg(&path)
        .args(["--at", "1", "--allow-simulated"])
        .output()
        .unwrap();
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stdout)
    );
}

#[test]
fn demo_ends_with_a_verified_answer() {
    let Some(model) = model_path() else { return };
    let out = cloister()
        .args(["demo", "--max-tokens", "24", "--threads", "2", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("signature         valid, from the attested signer"),
        "{text}"
    );
    assert!(text.contains("verdict: VERIFIED answer"), "{text}");
    assert!(text.contains("TEE               simulated"), "{text}");
    // The chain half: registration, a paid and sealed chat, a settlement that pays the operator.
    assert!(text.contains("node registered by operator"), "{text}");
    assert!(
        text.contains("e2ee              prompt and answer sealed"),
        "{text}"
    );
    assert!(text.contains("metering receipt: cumulative"), "{text}");
    assert!(text.contains("settle tx 0x"), "{text}");
    let earned = text
        .lines()
        .find_map(|l| l.strip_prefix("operator earned: "))
        .unwrap_or_else(|| panic!("no earnings line: {text}"));
    assert!(
        earned.starts_with("0.")
            && !earned
                .trim_end_matches(" cUSD")
                .trim_matches(['0', '.'])
                .is_empty(),
        "the operator earned something: {earned}"
    );
}
