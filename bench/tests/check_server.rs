//! `check_server` against real servers, as real processes on real loopback
//! sockets: reactor-echo, step 6 and the Python server of the checklist
//! page pass every check; step 6 without its read budget
//! (docs/tutorial/bugs/step6-no-read-budget.patch, built here) fails
//! `read-budget`; step 3's `--buggy` fails "read until EAGAIN"; the bug
//! patches of docs/tutorial/bugs/ still apply to the step they patch.
//!
//! The servers are the workspace's own binaries: `cargo test --workspace`
//! builds them (and the examples) before any test runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The checks that load the machine (floods, 16 MiB echoes) or measure a
/// latency run one at a time, so that the read budget's bound measures the
/// server, not us.
const HEAVY: &[&str] = &["read-until-eagain", "resume-read", "read-budget", "drain"];
/// The others mostly wait (one byte per write, a stopped server, slow
/// reads): they run beside anything, a server's heavy checks among them.
const LIGHT: &[&str] = &[
    "split-lines",
    "coalesced-lines",
    "accept-until-eagain",
    "keep-writable",
    "rdhup-short-read",
    "eintr",
];
static ONE_HEAVY_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Generous bounds: the machine may have two cores and other work. A
/// check that passes never waits out `--stall`; only a failing one does.
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

/// Runs the checker with `--only only` (later flags win over `BOUNDS`);
/// returns its exit code and its output.
fn check(only: &[&str], args: &[&str], server: &str) -> (i32, String) {
    let _heavy = only.iter().any(|name| !LIGHT.contains(name)).then(|| {
        ONE_HEAVY_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    });
    let out = Command::new(env!("CARGO_BIN_EXE_check_server"))
        .args(BOUNDS)
        .args(["--only", &only.join(",")])
        .args(args)
        .arg("--")
        .arg(server)
        .output()
        .expect("run check_server");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Runs every check against `server`: the light ones in a second checker
/// process beside the heavy ones. Returns the output of both, and the
/// passed and failed counts summed.
fn check_all(server: &str) -> (String, usize, usize) {
    // Every check is in one group or the other: none is left out.
    let listed = Command::new(env!("CARGO_BIN_EXE_check_server"))
        .arg("--list")
        .output()
        .expect("run check_server --list");
    let mut names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let mut grouped: Vec<String> = HEAVY.iter().chain(LIGHT).map(|n| n.to_string()).collect();
    names.sort();
    grouped.sort();
    assert_eq!(names, grouped, "HEAVY and LIGHT must name every check");

    let light = {
        let server = server.to_string();
        std::thread::spawn(move || check(LIGHT, &[], &server))
    };
    let (_, heavy) = check(HEAVY, &[], server);
    let (_, light) = light.join().expect("the light checks");
    let out = format!("{light}{heavy}");
    let count = |what: &str| -> usize {
        out.lines()
            .filter_map(|l| {
                let words: Vec<&str> = l.split([' ', ',']).filter(|w| !w.is_empty()).collect();
                (words.len() == 6 && words[1] == "passed")
                    .then(|| words.iter().position(|w| *w == what))
                    .flatten()
                    .and_then(|i| words[i - 1].parse::<usize>().ok())
            })
            .sum()
    };
    let (passed, failed) = (count("passed"), count("failed"));
    (out, passed, failed)
}

/// The line the checker printed for `name`.
fn line_of<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{output}"))
}

/// Asserts that `server` passes all ten checks, each with its own line.
fn passes_every_check(server: &str) {
    let (out, passed, failed) = check_all(server);
    assert_eq!((passed, failed), (10, 0), "{out}");
    for name in HEAVY.iter().chain(LIGHT) {
        assert!(line_of(&out, name).starts_with("PASS "), "{out}");
    }
}

#[test]
fn reactor_echo_passes_every_check() {
    let server = built("reactor-echo", None);
    passes_every_check(&format!("{server} --listen {{addr}}"));
}

#[test]
fn step6_passes_every_check() {
    let server = built("examples/step6_drain", Some("examples/step6_drain.rs"));
    passes_every_check(&format!("{server} --listen {{addr}}"));
}

#[test]
fn step6_without_its_read_budget_fails_read_budget_and_names_the_rule() {
    let server = patched_step6("step6-no-read-budget");
    // The flood starves the other client outright: 2 s tells as well as 5.
    let (code, out) = check(
        &["read-budget"],
        &["--latency", "2"],
        &format!("{server} --listen {{addr}}"),
    );
    assert_eq!(code, 1, "{out}");
    let line = line_of(&out, "read-budget");
    assert!(
        line.starts_with("FAIL read-budget [a read budget, with the connection queued again]: ")
            && line.contains("while one client kept sending 2-byte lines")
            && line.contains("back within 2 s")
            && line.contains("read at most a budget per turn"),
        "{out}"
    );
}

#[test]
fn step3_buggy_fails_read_until_eagain_and_names_the_rule() {
    let server = built(
        "examples/step3_edge_triggered",
        Some("examples/step3_edge_triggered.rs"),
    );
    // The lost wake-up is for good: 3 s of nothing tell as well as 10.
    let (code, out) = check(
        &["read-until-eagain"],
        &["--stall", "3"],
        &format!("{server} --buggy --listen {{addr}}"),
    );
    assert_eq!(code, 1, "{out}");
    let line = line_of(&out, "read-until-eagain");
    assert!(
        line.starts_with("FAIL read-until-eagain [read until EAGAIN]: 4096 of 1048576 bytes")
            && line.contains("then nothing for 3 s")
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
    passes_every_check(&format!("python3 {} {{addr}}", script.display()));
}

#[test]
fn a_server_that_never_accepts_is_reported_not_waited_for_forever() {
    let (code, out) = check(
        &["eintr"],
        &["--patience", "2"],
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

/// Step 6 with `docs/tutorial/bugs/NAME.patch` applied, built as a package
/// of its own in `target/tutorial-bugs/` (with the workspace's Cargo.lock,
/// offline): cargo holds the workspace's target directory while the tests
/// run. Returns the binary's path.
fn patched_step6(name: &str) -> String {
    let source = std::fs::read_to_string(repo().join("examples/step6_drain.rs")).unwrap();
    let patch =
        std::fs::read_to_string(repo().join(format!("docs/tutorial/bugs/{name}.patch"))).unwrap();
    let patched = apply(&source, &patch).unwrap_or_else(|e| panic!("{name}.patch: {e}"));
    // The step's dependencies, as the workspace's Cargo.toml gives them.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .lines()
        .filter(|l| {
            ["memchr", "mio", "signal-hook", "signal-hook-mio", "slab"]
                .iter()
                .any(|d| l.split(['=', ' ']).next() == Some(d))
        })
        .collect();
    assert_eq!(deps.len(), 5, "step 6's dependencies in Cargo.toml");
    let checker = PathBuf::from(env!("CARGO_BIN_EXE_check_server"));
    let root = checker
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("tutorial-bugs");
    let package = root.join(name);
    std::fs::create_dir_all(package.join("src")).unwrap();
    let write_if_new = |path: PathBuf, text: &str| {
        // Unchanged files keep their times, so cargo has nothing to redo.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            std::fs::write(&path, text).unwrap();
        }
    };
    write_if_new(
        package.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n[dependencies]\n{}\n\n[workspace]\n",
            deps.join("\n")
        ),
    );
    // The workspace's versions (cargo then drops what the step does not use).
    std::fs::copy(repo().join("Cargo.lock"), package.join("Cargo.lock")).unwrap();
    write_if_new(package.join("src/main.rs"), &patched);
    // A build loads the machine: not beside a heavy check.
    let _heavy = ONE_HEAVY_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--offline", "--manifest-path"])
        .arg(package.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building step 6 with {name}.patch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root.join("target/debug").join(name).display().to_string()
}

/// Applies a unified diff of one file to `text`: each hunk's old lines must
/// be found, once, and are replaced by its new lines.
fn apply(text: &str, patch: &str) -> Result<String, String> {
    let mut out = text.to_string();
    let mut hunks = Vec::new();
    for line in patch.lines() {
        if line.starts_with("@@") {
            hunks.push((String::new(), String::new()));
        } else if let Some((old, new)) = hunks.last_mut() {
            match line.split_at_checked(1) {
                Some((" ", rest)) => {
                    for side in [&mut *old, &mut *new] {
                        side.push_str(rest);
                        side.push('\n');
                    }
                }
                Some(("-", rest)) => {
                    old.push_str(rest);
                    old.push('\n');
                }
                Some(("+", rest)) => {
                    new.push_str(rest);
                    new.push('\n');
                }
                Some(("\\", _)) => {} // "\ No newline at end of file"
                // An empty context line may have lost its space.
                None => {
                    old.push('\n');
                    new.push('\n');
                }
                _ => return Err(format!("cannot read the line {line:?}")),
            }
        }
    }
    for (old, new) in hunks {
        match out.matches(old.as_str()).count() {
            1 => out = out.replacen(old.as_str(), &new, 1),
            n => return Err(format!("a hunk's lines are found {n} times, not once")),
        }
    }
    Ok(out)
}
