//! `cohort demo` end to end: the README's main job must keep working.

use std::process::Command;

fn run_demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .arg("demo")
        .args(args)
        .output()
        .expect("the cohort binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn demo_signs_and_verifies_on_ed25519() {
    let out = run_demo(&["--parties", "3", "--threshold", "2"]);
    assert!(
        out.contains("verification       VALID (ed25519-dalek"),
        "{out}"
    );
    assert!(out.contains("group public key"), "{out}");
}

#[test]
fn demo_signs_and_verifies_on_secp256k1_taproot() {
    let out = run_demo(&[
        "--parties",
        "3",
        "--threshold",
        "2",
        "--curve",
        "secp256k1-tr",
    ]);
    assert!(
        out.contains("verification       VALID (k256 BIP-340"),
        "{out}"
    );
}

#[test]
fn demo_refuses_a_threshold_above_the_parties() {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["demo", "--parties", "2", "--threshold", "3"])
        .output()
        .expect("the cohort binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threshold 3"), "{err}");
}
