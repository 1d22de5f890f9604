//! Keeps the Markdown docs honest: every file path, function name and
//! relative link that `README.md` and `docs/**/*.md` (English and Chinese,
//! the tutorial pages included) put in backticks or link to must exist.
//! `cargo test` runs it, so `make test` does. It fails with one line per
//! stale name, and it also fails if it found too few names to check, so a
//! broken scan cannot make it pass by checking nothing.
//!
//! The Rust docs need no such test: rustdoc resolves their intra-doc links
//! (`[`Server::run`]`), and `make test` builds them, private items
//! included, with warnings as errors. This file checks what rustdoc cannot
//! see, the Markdown, and does it with a plain text search, not a parser.
//!
//! # The rule
//!
//! Only inline code spans in prose and tables count: fenced code blocks hold
//! traces, logs and sample output, not names. A span is checked as
//!
//! - a **path** when it starts with `src/`, `examples/`, `tests/`,
//!   `scripts/`, `fuzz/`, `bench/` or `docs/` and holds only path
//!   characters: the file or folder must exist; a `*` must match a file;
//! - a **function name** when it is
//!   1. a call: `name(…)` or `Path::name(…)`, the last segment lowercase;
//!   2. a path ending in a lowercase segment: `Type::method`,
//!      `module::function`;
//!   3. any span in a table column headed "functions" or "函数";
//! - a **code name** when it is a bare snake_case identifier with an
//!   underscore (`read_input`, `flush_all`), which may name a function, a
//!   field or a variable.
//!
//! A single lowercase word outside a "functions" column (`work`, but also
//! `line`, `off`, `nc`) is not checked: it cannot be told from a word, a
//! command or a command-line value. Write it as `Server::work` or
//! `work()`, or in a "functions" column, to have it checked.
//!
//! # What "exists" means
//!
//! The last segment of the name (`Type::method` → `method`) must appear in
//! the Rust sources of `src/`, `examples/`, `tests/` or `bench/` as
//!
//! - a definition, `fn name(` or `fn name<`;
//! - a call, `name(`, `.name(` or `::name(` (an outside API the code uses:
//!   `write_all`, `Poll::poll`);
//! - for a code name, also a field or parameter (`name:`) or a binding
//!   (`let name`, `let mut name`);
//! - or a module, `src/name.rs` or `src/name/`.
//!
//! It is a search, not a resolution: a name that also occurs in a comment
//! passes. That is the price of not parsing Rust here; the names inside
//! the code are rustdoc's to check.
//!
//! Names of things that are not Rust (system calls, kernel and libc
//! functions, other projects' names) are in [`NOT_RUST`], the one list of
//! exceptions. Relative links (`[text](../src/sys.rs)`) must point at a
//! file or folder that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Names the docs use that are not Rust, so no `fn` can back them: system
/// calls as strace prints them, libc and kernel functions, and other
/// projects' names. Nothing that the code defines belongs here.
const NOT_RUST: &[&str] = &[
    // System calls (strace's names).
    "accept",
    "accept4",
    "bind",
    "close",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_wait",
    "fcntl",
    "getsockname",
    "ioctl",
    "listen",
    "openat",
    "poll",
    "prlimit64",
    "read",
    "recv",
    "recvfrom",
    "rt_sigaction",
    "select",
    "send",
    "sendto",
    "setsockopt",
    "shutdown",
    "socket",
    "socketpair",
    "write",
    "writev",
    // libc functions.
    "getrlimit",
    "memmove",
    "setrlimit",
    // Linux kernel functions, as perf and the kernel's source name them.
    "ep_poll_callback",
    "sk_stream_write_space",
    "sock_def_readable",
    "tcp_ack",
    "tcp_poll",
    "tcp_rcv_established",
    "tcp_v4_rcv",
    // Other projects: nginx's directive, libuv's function.
    "lingering_close",
    "uv__emfile_trick",
];

/// Below these, the scan is broken, not the docs clean. When the test was
/// written, without the tutorial pages, the docs held about 135 paths, 420
/// function names (225 of them in docs/zh) and 118 relative links.
const MIN_PATHS: usize = 100;
const MIN_FUNCTIONS: usize = 300;
const MIN_FUNCTIONS_ZH: usize = 150;
const MIN_LINKS: usize = 60;

/// The folders a path in the docs may start with.
const PATH_ROOTS: &[&str] = &[
    "src/",
    "examples/",
    "tests/",
    "scripts/",
    "fuzz/",
    "bench/",
    "docs/",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.md` file under `dir`, sorted.
fn markdown_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            markdown_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under `dir`, with its text.
fn rust_under(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            rust_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(fs::read_to_string(&path).expect("read a Rust file"));
        }
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The Rust sources, searched as text.
struct Code {
    texts: Vec<String>,
}

impl Code {
    fn read() -> Code {
        let mut texts = Vec::new();
        for dir in ["src", "examples", "tests", "bench/src"] {
            rust_under(&root().join(dir), &mut texts);
        }
        Code { texts }
    }

    /// Whether `needle` occurs with no identifier character just before it
    /// (so `fn read(` is not found in `fn spread(`).
    fn has(&self, needle: &str) -> bool {
        self.texts.iter().any(|text| {
            text.match_indices(needle)
                .any(|(at, _)| at == 0 || !is_ident(text.as_bytes()[at - 1]))
        })
    }

    fn is_module(name: &str) -> bool {
        let src = root().join("src");
        src.join(format!("{name}.rs")).exists() || src.join(name).is_dir()
    }

    fn defined_or_called(&self, name: &str) -> bool {
        NOT_RUST.contains(&name)
            || Self::is_module(name)
            || [
                format!("fn {name}("),
                format!("fn {name}<"),
                format!("{name}("),
                format!(".{name}("),
                format!("::{name}("),
            ]
            .iter()
            .any(|needle| self.has(needle))
    }

    /// Why the function name `path` (segments, call arguments removed)
    /// names nothing in the code, or `None` if it does.
    fn check_function(&self, path: &[&str]) -> Option<String> {
        let name = *path.last()?;
        (!self.defined_or_called(name)).then(|| {
            format!("no `fn {name}`, call of it or module of that name in src/, examples/, tests/ or bench/")
        })
    }

    fn check_code_name(&self, name: &str) -> Option<String> {
        let known = self.defined_or_called(name)
            || [
                format!("{name}:"),
                format!("let {name}"),
                format!("let mut {name}"),
            ]
            .iter()
            .any(|needle| self.has(needle));
        (!known).then(|| {
            format!(
                "`{name}` is no fn, call, field, parameter or binding in src/, examples/, tests/ or bench/"
            )
        })
    }
}

/// One inline code span of a doc, or one link target.
struct Found {
    line: usize,
    text: String,
    /// Inside a table column headed "functions".
    in_functions_column: bool,
}

/// The inline code spans and the relative link targets of one Markdown
/// text, outside fenced code blocks.
fn scan_markdown(text: &str) -> (Vec<Found>, Vec<Found>) {
    let mut spans = Vec::new();
    let mut links = Vec::new();
    let mut in_fence = false;
    let mut functions_column: Option<usize> = None;
    let mut prose = String::new();
    let mut line_of = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            prose.push('\n');
            line_of.push(n + 1);
            continue;
        }
        if in_fence {
            prose.push('\n');
            line_of.push(n + 1);
            continue;
        }
        // Tables: find a column headed "functions" (header, then |---|).
        let is_row = line.trim_start().starts_with('|');
        if is_row {
            let cells = split_row(line);
            let next_is_rule = lines
                .get(n + 1)
                .is_some_and(|l| l.trim_start().starts_with("|-") || l.contains("|---"));
            if next_is_rule {
                functions_column = cells.iter().position(|c| {
                    let c = c.trim().to_lowercase();
                    c == "functions" || c == "函数"
                });
            } else if let Some(col) = functions_column
                && let Some(cell) = cells.get(col)
            {
                for span in inline_spans(cell) {
                    spans.push(Found {
                        line: n + 1,
                        text: span,
                        in_functions_column: true,
                    });
                }
            }
        } else {
            functions_column = None;
        }
        for _ in 0..=line.len() {
            line_of.push(n + 1);
        }
        prose.push_str(line);
        prose.push('\n');
    }
    // Spans may wrap across lines inside a paragraph: scan the whole text.
    let b = prose.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'`' {
            let ticks = b[i..].iter().take_while(|&&c| c == b'`').count();
            let fence = "`".repeat(ticks);
            let start = i + ticks;
            if let Some(len) = prose[start..].find(&fence) {
                let span = prose[start..start + len].replace('\n', " ");
                spans.push(Found {
                    line: line_of.get(i).copied().unwrap_or(0),
                    text: span.trim().to_string(),
                    in_functions_column: false,
                });
                i = start + len + ticks;
                continue;
            }
            i = start;
            continue;
        }
        if b[i..].starts_with(b"](") {
            let start = i + 2;
            if let Some(len) = prose[start..].find(')') {
                let target = &prose[start..start + len];
                let is_relative = !target.contains("://")
                    && !target.starts_with('#')
                    && !target.starts_with("mailto:")
                    && !target.is_empty()
                    && !target.contains(' ');
                if is_relative {
                    links.push(Found {
                        line: line_of.get(i).copied().unwrap_or(0),
                        text: target.to_string(),
                        in_functions_column: false,
                    });
                }
            }
        }
        i += 1;
    }
    // A span in a "functions" column was found twice: keep that finding.
    let in_column: BTreeSet<(usize, String)> = spans
        .iter()
        .filter(|s| s.in_functions_column)
        .map(|s| (s.line, s.text.clone()))
        .collect();
    spans.retain(|s| s.in_functions_column || !in_column.contains(&(s.line, s.text.clone())));
    (spans, links)
}

/// The cells of a table row, split at `|` but not at `\|`.
fn split_row(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

fn inline_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_string())
        .collect()
}

/// How a span is checked, by its shape.
enum Kind<'a> {
    Path(&'a str),
    /// Segments of `a::b::c`, call arguments removed.
    Function(Vec<&'a str>),
    CodeName(&'a str),
    NotChecked,
}

fn is_snake(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn is_ident_str(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(|c: char| c.is_ascii_digit()) && s.bytes().all(is_ident)
}

fn kind(span: &str, in_functions_column: bool) -> Kind<'_> {
    if PATH_ROOTS.iter().any(|r| span.starts_with(r))
        && span
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-./*".contains(&c))
    {
        return Kind::Path(span);
    }
    // `name(args)`: a call; keep the name.
    let (name, is_call) = match span.find('(') {
        Some(open) if span.ends_with(')') => (&span[..open], true),
        _ => (span, false),
    };
    let segments: Vec<&str> = name.split("::").collect();
    if !segments.iter().all(|s| is_ident_str(s)) {
        return Kind::NotChecked;
    }
    let last = segments[segments.len() - 1];
    let lowercase = last.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
    if lowercase && (is_call || segments.len() > 1 || in_functions_column) {
        Kind::Function(segments)
    } else if segments.len() == 1 && is_snake(last) && last.contains('_') {
        Kind::CodeName(last)
    } else {
        Kind::NotChecked
    }
}

/// Whether `pattern` (a path, `*` matching within one segment) names at
/// least one existing file or folder.
fn path_exists(pattern: &str) -> bool {
    fn matches(pattern: &str, name: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == name,
            Some((head, tail)) => {
                name.len() >= head.len()
                    && name.starts_with(head)
                    && (0..=name.len() - head.len()).any(|k| matches(tail, &name[head.len() + k..]))
            }
        }
    }
    let mut candidates = vec![root()];
    for segment in pattern.trim_end_matches('/').split('/') {
        let mut next = Vec::new();
        for dir in &candidates {
            if !segment.contains('*') {
                let p = dir.join(segment);
                if p.exists() {
                    next.push(p);
                }
                continue;
            }
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                if matches(segment, &entry.file_name().to_string_lossy()) {
                    next.push(entry.path());
                }
            }
        }
        candidates = next;
    }
    !candidates.is_empty()
}

/// Every Markdown page the check covers.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    markdown_under(&root().join("docs"), &mut files);
    files
}

#[test]
fn every_name_and_path_in_the_docs_exists() {
    let code = Code::read();
    let files = doc_files();
    assert!(
        files.iter().any(|f| f.starts_with(root().join("docs/zh"))),
        "no Chinese pages found"
    );
    let mut problems = Vec::new();
    let mut counts = BTreeMap::<&str, usize>::new();
    let mut functions_zh = 0;
    // DOCS_CHECK_VERBOSE=1 lists every name checked, and how it fared.
    let verbose = std::env::var_os("DOCS_CHECK_VERBOSE").is_some();
    for file in &files {
        let text = fs::read_to_string(file).expect("read a doc");
        let (spans, links) = scan_markdown(&text);
        let rel = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        for found in &spans {
            let problem = match kind(&found.text, found.in_functions_column) {
                Kind::Path(p) => {
                    *counts.entry("paths").or_default() += 1;
                    (!path_exists(p)).then(|| "no such file or folder".to_string())
                }
                Kind::Function(segments) => {
                    *counts.entry("functions").or_default() += 1;
                    if rel.starts_with("docs/zh") {
                        functions_zh += 1;
                    }
                    code.check_function(&segments)
                }
                Kind::CodeName(name) => {
                    *counts.entry("functions").or_default() += 1;
                    if rel.starts_with("docs/zh") {
                        functions_zh += 1;
                    }
                    code.check_code_name(name)
                }
                Kind::NotChecked => None,
            };
            if verbose
                && !matches!(
                    kind(&found.text, found.in_functions_column),
                    Kind::NotChecked
                )
            {
                eprintln!(
                    "{rel}:{}: `{}` {}",
                    found.line,
                    found.text,
                    problem.as_deref().unwrap_or("ok")
                );
            }
            if let Some(why) = problem {
                problems.push(format!("{rel}:{}: `{}`: {why}", found.line, found.text));
            }
        }
        for link in &links {
            *counts.entry("links").or_default() += 1;
            let target = link.text.split('#').next().unwrap_or("");
            let resolved = file.parent().unwrap_or(&root()).join(target);
            if !target.is_empty() && !resolved.exists() {
                problems.push(format!(
                    "{rel}:{}: link `{}`: no such file or folder",
                    link.line, link.text
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the docs name what the code does not have ({} problems; the rule is in tests/docs.rs):\n{}",
        problems.len(),
        problems.join("\n")
    );
    let count = |k| counts.get(k).copied().unwrap_or(0);
    if verbose {
        eprintln!("checked: {counts:?}, {functions_zh} function names in docs/zh");
    }
    assert!(
        count("paths") >= MIN_PATHS
            && count("functions") >= MIN_FUNCTIONS
            && functions_zh >= MIN_FUNCTIONS_ZH
            && count("links") >= MIN_LINKS,
        "too little checked to trust: {counts:?}, {functions_zh} function names in docs/zh"
    );
}

/// The parsing the check relies on, on small inputs.
#[test]
fn spans_are_classified_by_shape() {
    assert!(matches!(kind("src/sys.rs", false), Kind::Path(_)));
    assert!(matches!(kind("examples/step*.rs", false), Kind::Path(_)));
    assert!(matches!(kind("Server::run", false), Kind::Function(s) if s == ["Server", "run"]));
    assert!(matches!(kind("close(conn)", false), Kind::Function(s) if s == ["close"]));
    assert!(matches!(kind("settle", true), Kind::Function(_)));
    assert!(matches!(kind("settle", false), Kind::NotChecked));
    assert!(matches!(
        kind("read_input", false),
        Kind::CodeName("read_input")
    ));
    for not_a_name in [
        "Token(usize::MAX)",
        "mio::Poll",
        "--framing line",
        "kill -USR1 <pid>",
        "data.u64",
        "EPOLLOUT",
        "recvfrom(...) = -1 EAGAIN",
    ] {
        assert!(
            matches!(kind(not_a_name, false), Kind::NotChecked),
            "{not_a_name}"
        );
    }
    let code = Code {
        texts: vec!["fn spread(x: u8) { let mut total = 0; helper::go(x); }".into()],
    };
    assert!(code.check_function(&["spread"]).is_none());
    assert!(code.check_function(&["Stats", "spread"]).is_none());
    assert!(code.check_function(&["go"]).is_none(), "a call counts");
    assert!(
        code.check_function(&["ead"]).is_some(),
        "`ead(` inside `spread(` is not a call"
    );
    assert!(code.check_code_name("total").is_none());
    assert!(code.check_code_name("x").is_none());
    assert!(code.check_code_name("no_such").is_some());
    let (spans, links) = scan_markdown(
        "| topic | functions |\n|---|---|\n| a | `settle`, `Connection::write_out` |\n\n\
         Call `resume_readers` and\n`peer_closed`; see [x](../src/sys.rs).\n```\n`not_this`\n```\n",
    );
    let texts: Vec<&str> = spans.iter().map(|s| s.text.as_str()).collect();
    assert!(texts.contains(&"resume_readers") && texts.contains(&"peer_closed"));
    assert!(!texts.contains(&"not_this"), "{texts:?}");
    assert!(
        spans
            .iter()
            .any(|s| s.text == "settle" && s.in_functions_column)
    );
    assert_eq!(links.len(), 1);
}
