//! Bad pipeline files get one-line errors naming file:line and the key, with exit code 2.

use crate::common::*;

const GOOD: &str = r#"name = "shop"
data_dir = "data"

[source]
type = "datagen"
events = 10
txn_size = 5

[[sinks]]
name = "files"
type = "file"
path = "out"
"#;

fn check(text: &str, envs: &[(&str, &str)]) -> (i32, String, String) {
    let dir = TempDir::new("cfg");
    let path = write_pipeline(dir.path(), text);
    let mut cmd = weir();
    cmd.arg("check").arg(&path).env_remove("WEIR_TEST_MISSING");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        stdout,
        stderr.replace(&path.display().to_string(), "pipeline.toml"),
    )
}

fn assert_one_line_error(stderr: &str, expected_prefix: &str, needles: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].starts_with(expected_prefix),
        "expected {expected_prefix:?}, got: {stderr}"
    );
    for n in needles {
        assert!(lines[0].contains(n), "expected {n:?} in: {stderr}");
    }
}

#[test]
fn a_good_file_passes_check() {
    let (code, stdout, stderr) = check(GOOD, &[]);
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.contains("look ready"), "{stdout}");
}

#[test]
fn typoed_key_names_line_and_suggests() {
    let text = GOOD.replace("txn_size = 5", "txn_sise = 5");
    let (code, _, stderr) = check(&text, &[]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "error: pipeline.toml:7:",
        &[
            "unknown key `txn_sise`",
            "[source]",
            "did you mean `txn_size`",
        ],
    );
}

#[test]
fn typoed_top_level_key() {
    let text = GOOD.replace("data_dir =", "datadir =");
    let (code, _, stderr) = check(&text, &[]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "error: pipeline.toml:2:",
        &["unknown key `datadir`", "did you mean `data_dir`"],
    );
}

#[test]
fn missing_env_var_names_line_and_variable() {
    let text = GOOD.replace("path = \"out\"", "path = \"${WEIR_TEST_MISSING}/out\"");
    let (code, _, stderr) = check(&text, &[]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "error: pipeline.toml:12:",
        &["WEIR_TEST_MISSING is not set", "`path`"],
    );
}

#[test]
fn env_var_is_expanded() {
    let text = GOOD.replace("path = \"out\"", "path = \"${WEIR_TEST_DIR}/out\"");
    let dir = TempDir::new("cfgenv");
    let (code, stdout, stderr) = check(&text, &[("WEIR_TEST_DIR", dir.path().to_str().unwrap())]);
    assert_eq!(code, 0, "{stdout} {stderr}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let text = GOOD.replace("events = 10", "events = \"ten\"");
    let (code, _, stderr) = check(&text, &[]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "error: pipeline.toml:6:",
        &["`events`", "invalid type"],
    );
}

#[test]
fn unknown_connector_type_lists_available() {
    let text = GOOD.replace("type = \"file\"", "type = \"fiel\"");
    let (code, _, stderr) = check(&text, &[]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "error: pipeline.toml:11:",
        &[
            "unknown [[sinks]] type \"fiel\"",
            "did you mean \"file\"",
            "available: \"file\"",
        ],
    );
    let text = GOOD.replace("type = \"datagen\"", "type = \"oracle\"");
    let (code, _, stderr) = check(&text, &[]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "error: pipeline.toml:5:",
        &["unknown [source] type \"oracle\""],
    );
}

#[test]
fn bad_values_are_rejected() {
    let (code, _, stderr) = check(&GOOD.replace("name = \"shop\"", "name = \"Shop-1\""), &[]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "error: pipeline.toml:1:",
        &["not a valid pipeline name"],
    );
    let (code, _, stderr) = check(&GOOD.replace("txn_size = 5", "txn_size = 0"), &[]);
    assert_eq!(code, 2);
    assert_one_line_error(&stderr, "error: pipeline.toml:7:", &["at least 1"]);
    let dup = format!("{GOOD}\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out2\"\n");
    let (code, _, stderr) = check(&dup, &[]);
    assert_eq!(code, 2);
    assert_one_line_error(
        &stderr,
        "error: pipeline.toml:14:",
        &["two sinks are named \"files\""],
    );
}

#[test]
fn syntax_error_and_missing_file_exit_2() {
    let (code, _, stderr) = check("name = \"x\"\n[source\n", &[]);
    assert_eq!(code, 2);
    assert_one_line_error(&stderr, "error: pipeline.toml:2", &[]);
    let out = run(weir().arg("check").arg("/nonexistent/weir.toml"));
    assert_eq!(out.status.code(), Some(2));
    let out = run(weir().arg("frobnicate"));
    assert_eq!(out.status.code(), Some(2));
}
