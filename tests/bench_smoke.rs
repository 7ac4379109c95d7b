//! Smoke test of the benchmark tool: every scenario runs at a tiny scale against the real server
//! and fake upstream binaries, prints its rows, and no request fails. No timing is asserted: the
//! numbers of a quick debug run mean nothing.

use std::process::Command;

#[test]
fn every_scenario_runs_at_a_tiny_scale_without_errors() {
    let work = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_nano-banana-bench"))
        .args([
            "all",
            "--quick",
            "--server-bin",
            env!("CARGO_BIN_EXE_nano-banana"),
        ])
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("| scenario | via | conc | ok | errors | req/s | p50 ms |"));
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|line| line.starts_with("| S"))
        .map(|line| line.split('|').map(str::trim).collect())
        .filter(|cells: &Vec<&str>| cells.len() == 16)
        .collect();
    for (scenario, via) in [
        ("S1", "direct"),
        ("S1", "server"),
        ("S2", "server"),
        ("S3", "server"),
        ("S4 accept", "server"),
        ("S4 deliver", "server"),
        ("S5", "server"),
        ("S6", "static"),
        ("S6", "server"),
    ] {
        assert!(
            rows.iter().any(|r| r[1] == scenario && r[2] == via),
            "no {scenario} {via} row in\n{stdout}"
        );
    }
    for row in &rows {
        assert_eq!(row[5], "0", "errors in {row:?}\n{stdout}");
        assert_ne!(row[4], "0", "nothing succeeded in {row:?}\n{stdout}");
    }
}
