//! `check_server` against real servers, as real processes on real loopback
//! sockets: reactor-echo and the Python server of the checklist page pass
//! every check; step 6 passes every check but the read budget, which it
//! does not have (docs/tutorial/06-drain.md, exercise 3); step 3's
//! `--buggy` fails "read until EAGAIN"; the bug patches of
//! docs/tutorial/bugs/ still apply to the step they patch.
//!
//! The servers are the workspace's own binaries: `cargo test --workspace`
//! builds them (and the examples) before any test runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One check run at a time: they load the machine (floods, 16 MiB echoes),
/// and the read budget's latency bound should measure the server, not us.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Generous bounds: the machine may have two cores and other work.
const BOUNDS: &[&str] = &["--stall", "10", "--latency", "5", "--patience", "30"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of the workspace, next to check_server (target/debug).
fn built(relative: &str, source: Option<&str>) -> String {
    let checker = PathBuf::from(env!("CARGO_BIN_EXE_check_server"));
    let path = checker.parent().unwrap().join(relative);
    let how = "`cargo test --workspace` builds it, or `cargo build --bins --examples`";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} missing: {how}", path.display()));
    // Do not check an old build of a step that has since been edited.
    if let Some(source) = source
        && let Ok(edited) = std::fs::metadata(repo().join(source)).and_then(|m| m.modified())
    {
        assert!(
            built >= edited,
            "{} is older than {source}: {how}",
            path.display()
        );
    }
    path.display().to_string()
}

/// Runs the checker; returns its exit code and its output.
fn check(args: &[&str], server: &str) -> (i32, String) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_check_server"))
        .args(BOUNDS)
        .args(args)
        .arg("--")
        .arg(server)
        .output()
        .expect("run check_server");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The line the checker printed for `name`.
fn line_of<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{output}"))
}

#[test]
fn reactor_echo_passes_every_check() {
    let server = built("reactor-echo", None);
    let (code, out) = check(&[], &format!("{server} --listen {{addr}}"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("10 passed, 0 failed, 0 skipped"), "{out}");
}

#[test]
fn step6_passes_every_check_but_the_read_budget_it_does_not_have() {
    let server = built("examples/step6_drain", Some("examples/step6_drain.rs"));
    let (code, out) = check(&[], &format!("{server} --listen {{addr}}"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("9 passed, 1 failed, 0 skipped"), "{out}");
    let budget = line_of(&out, "read-budget");
    assert!(
        budget.starts_with("FAIL read-budget [a read budget, with the connection queued again]: ")
            && budget.contains("2-byte lines"),
        "{out}"
    );
    for check in [
        "split-lines",
        "coalesced-lines",
        "accept-until-eagain",
        "read-until-eagain",
        "keep-writable",
        "resume-read",
        "rdhup-short-read",
        "eintr",
        "drain",
    ] {
        assert!(line_of(&out, check).starts_with("PASS "), "{out}");
    }
}

#[test]
fn step3_buggy_fails_read_until_eagain_and_names_the_rule() {
    let server = built(
        "examples/step3_edge_triggered",
        Some("examples/step3_edge_triggered.rs"),
    );
    let (code, out) = check(
        &["--only", "read-until-eagain"],
        &format!("{server} --buggy --listen {{addr}}"),
    );
    assert_eq!(code, 1, "{out}");
    let line = line_of(&out, "read-until-eagain");
    assert!(
        line.starts_with("FAIL read-until-eagain [read until EAGAIN]: 4096 of 1048576 bytes")
            && line.contains("then nothing for 10 s")
            && line.contains("sit unread in the server's socket")
            && line.contains("step 3's lost wake-up"),
        "{out}"
    );
}

#[test]
fn the_python_epoll_server_passes_every_check() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 is not installed: skipped");
        return;
    }
    let script = repo().join("docs/tutorial/epoll_echo.py");
    let (code, out) = check(&[], &format!("python3 {} {{addr}}", script.display()));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("10 passed, 0 failed, 0 skipped"), "{out}");
}

#[test]
fn a_server_that_never_accepts_is_reported_not_waited_for_forever() {
    let (code, out) = check(
        &["--only", "eintr", "--patience", "2"],
        "sh -c 'echo starting; sleep 30'",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        line_of(&out, "eintr").contains("could not start the server")
            && out.contains("listening on ADDR"),
        "{out}"
    );
}

#[test]
fn the_bug_patches_still_apply() {
    let dir = repo().join("docs/tutorial/bugs");
    let mut patches: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    patches.sort();
    assert!(!patches.is_empty());
    if !repo().join(".git").exists() || Command::new("git").arg("--version").output().is_err() {
        eprintln!("not a git checkout, or no git: skipped");
        return;
    }
    for patch in patches {
        let out = Command::new("git")
            .current_dir(repo())
            .args(["apply", "--check"])
            .arg(&patch)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "{} no longer applies (regenerate it): {}",
            patch.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
