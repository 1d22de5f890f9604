//! Keeps the docs honest: every file path, function name and relative link
//! that `README.md` and `docs/**/*.md` (English and Chinese, the tutorial
//! pages included) put in backticks or link to must exist in the code.
//! `cargo test` runs it, so `make test` does. It fails with one line per
//! stale name, and it also fails if it found too few names to check, so a
//! broken parser cannot make it pass by checking nothing.
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
//!   underscore (`read_input`, `write_ready`), which may name a function, a
//!   field or a variable.
//!
//! A single lowercase word outside a "functions" column (`settle`, but also
//! `line`, `off`, `nc`) is not checked: it cannot be told from a word, a
//! command or a command-line value. Write it as `Server::settle` or
//! `settle()`, or in a "functions" column, to have it checked.
//!
//! # What "exists" means
//!
//! - `Type::method` where `Type` is a struct, enum or trait of this
//!   workspace: `fn method` inside an `impl` of `Type` (its own or a
//!   trait's) or inside `trait Type`.
//! - `module::function` where `module` is a file or folder of `src/`: a
//!   `fn function` in it.
//! - `Type::method` where `Type` is not defined here (mio's `Poll`): the
//!   code must call it, `Type::method(`. The docs name only the outside
//!   API the code really uses.
//! - A bare function name: a `fn` of that name in `src/`, `examples/` or
//!   `tests/`, or a call of it in `src/` or `examples/` (`write_all`, an
//!   outside API the code uses). A code name: the same, or a field,
//!   parameter or `let` binding declared there.
//! - Names of things that are not Rust (system calls, kernel and libc
//!   functions, other projects' names) are in [`NOT_RUST`], the one list of
//!   exceptions.
//!
//! Relative links (`[text](../src/sys.rs)`) must point at a file or folder
//! that exists.

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
fn rust_under(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            rust_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("read a Rust file");
            out.push((path, text));
        }
    }
}

/// `text` with comments, string and char literals blanked out (same
/// length, newlines kept), so braces and `fn` inside them do not count.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                let mut j = i;
                while j < b.len() {
                    if b[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            // Raw strings: r"…", r#"…"#, br"…".
            b'r' if (i == 0 || !is_ident(b[i - 1]) || b[i - 1] == b'b')
                && matches!(b.get(i + 1), Some(b'"' | b'#')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let start = i + 2 + hashes;
                let end = b[start..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |n| start + n + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            b'\'' => {
                // After a backslash comes the escaped char, then the quote
                // (`'\''`, `'\n'`; `'\u{…}'` has no quote inside either).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b.get(i + 3..)
                        .and_then(|rest| rest.iter().position(|&c| c == b'\''))
                        .map(|n| i + 3 + n + 1)
                } else {
                    let ch_len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 2 + ch_len)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8: only ASCII became spaces")
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The identifier starting at `at`, if any.
fn ident_at(s: &str, at: usize) -> Option<&str> {
    let len = s.as_bytes()[at..]
        .iter()
        .take_while(|&&c| is_ident(c))
        .count();
    (len > 0).then(|| &s[at..at + len])
}

/// Positions where the keyword `word` starts as a whole word.
fn keyword_positions<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(word)
        .map(|(at, _)| at)
        .filter(move |&at| {
            let b = code.as_bytes();
            (at == 0 || !is_ident(b[at - 1]))
                && b.get(at + word.len()).is_some_and(|&c| !is_ident(c))
        })
}

/// The index just past the `}` that closes the `{` at `open`.
fn block_end(code: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in code[open..].bytes().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// The names of the `fn`s directly inside the block `code[open..end]`.
fn fns_in_block(code: &str, open: usize, end: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let b = code.as_bytes();
    let mut i = open;
    while i < end {
        match b[i] {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b'f' if depth == 1
                && code[i..].starts_with("fn ")
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                let name_at = i + 3 + code[i + 3..].len() - code[i + 3..].trim_start().len();
                if let Some(name) = ident_at(code, name_at) {
                    names.push(name.to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// The last path segment of the type in `header` (`Server<H>` → `Server`,
/// `fmt::Display` → `Display`), skipping leading generics.
fn type_name(header: &str) -> Option<String> {
    let mut s = header.trim();
    if s.starts_with('<') {
        let mut depth = 0;
        let end = s
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '<' => 1,
                    '>' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(s.len(), |(i, _)| i + 1);
        s = s[end..].trim_start();
    }
    let path_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let last = s[..path_end].rsplit("::").next()?;
    (!last.is_empty()).then(|| last.to_string())
}

/// What the code defines, found by reading it.
#[derive(Default)]
struct Code {
    /// Struct, enum, trait and type names.
    types: BTreeSet<String>,
    /// Type or trait → the `fn`s of its impls (and of the trait itself).
    methods: BTreeMap<String, BTreeSet<String>>,
    /// Every `fn` name, with the files that define one.
    fns: BTreeMap<String, BTreeSet<PathBuf>>,
    /// Fields, parameters and `let` bindings.
    bindings: BTreeSet<String>,
    /// Names called in `src/` and `examples/`: `name(`, `.name(`, `::name(`.
    called: BTreeSet<String>,
    /// The code of `src/` and `examples/`, comments and literals blanked.
    calls_in: Vec<String>,
}

impl Code {
    fn read() -> Code {
        let mut files = Vec::new();
        for dir in ["src", "examples", "tests"] {
            rust_under(&root().join(dir), &mut files);
        }
        let mut code = Code::default();
        for (path, text) in &files {
            let src = code_only(text);
            let in_tests = path.starts_with(root().join("tests"));
            if !in_tests {
                code.calls_in.push(src.clone());
                let b = src.as_bytes();
                for (at, _) in src.match_indices('(') {
                    let len = b[..at].iter().rev().take_while(|&&c| is_ident(c)).count();
                    if len > 0 {
                        code.called.insert(src[at - len..at].to_string());
                    }
                }
            }
            for kw in ["struct", "enum", "trait", "type"] {
                for at in keyword_positions(&src, kw) {
                    let rest = &src[at + kw.len()..];
                    let name_at = at + kw.len() + rest.len() - rest.trim_start().len();
                    if let Some(name) = ident_at(&src, name_at) {
                        code.types.insert(name.to_string());
                    }
                }
            }
            for at in keyword_positions(&src, "fn") {
                let rest = &src[at + 2..];
                let name_at = at + 2 + rest.len() - rest.trim_start().len();
                if let Some(name) = ident_at(&src, name_at) {
                    code.fns
                        .entry(name.to_string())
                        .or_default()
                        .insert(path.clone());
                }
            }
            for kw in ["impl", "trait"] {
                for at in keyword_positions(&src, kw) {
                    let Some(open) = src[at..].find(['{', ';']).map(|n| at + n) else {
                        continue;
                    };
                    if src.as_bytes()[open] != b'{' {
                        continue;
                    }
                    let header = &src[at + kw.len()..open];
                    let end = block_end(&src, open);
                    let methods = fns_in_block(&src, open, end);
                    let (trait_part, self_part) = match keyword_positions(header, "for").next() {
                        Some(f) if kw == "impl" => (Some(&header[..f]), &header[f + 3..]),
                        _ => (None, header),
                    };
                    for owner in [trait_part.and_then(type_name), type_name(self_part)]
                        .into_iter()
                        .flatten()
                    {
                        code.methods
                            .entry(owner)
                            .or_default()
                            .extend(methods.iter().cloned());
                    }
                }
            }
            // Fields and parameters (`name: Type`), `let` bindings.
            let b = src.as_bytes();
            for (at, _) in src.match_indices(':') {
                let before = src[..at].trim_end();
                let after = b.get(at + 1).copied();
                if after == Some(b':') || before.ends_with(':') {
                    continue;
                }
                let start = before.bytes().rev().take_while(|&c| is_ident(c)).count();
                if start > 0 {
                    code.bindings
                        .insert(before[before.len() - start..].to_string());
                }
            }
            for at in keyword_positions(&src, "let") {
                let rest = src[at + 3..].trim_start();
                let rest = rest.strip_prefix("mut ").unwrap_or(rest).trim_start();
                let len = rest.bytes().take_while(|&c| is_ident(c)).count();
                if len > 0 {
                    code.bindings.insert(rest[..len].to_string());
                }
            }
        }
        code
    }

    /// Files and folders of `src/` that are modules: `sys` → `src/sys.rs`.
    fn module_files(&self, module: &str) -> Vec<PathBuf> {
        let src = root().join("src");
        [src.join(format!("{module}.rs")), src.join(module)]
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    }

    /// Why `span` (a function-like name, call arguments removed) does not
    /// name a function of the code, or `None` if it does.
    fn check_function(&self, path: &[&str]) -> Option<String> {
        // `crate::sys::unacked_bytes` is `sys::unacked_bytes`.
        let path = match path {
            ["crate" | "reactor_echo", rest @ ..] if !rest.is_empty() => rest,
            _ => path,
        };
        let name = *path.last()?;
        if !self.module_files(name).is_empty() && !self.fns.contains_key(name) {
            // A module named as a path: `crate::timers`.
            return None;
        }
        if path.len() == 1 {
            let known = self.fns.contains_key(name)
                || self.called.contains(name)
                || NOT_RUST.contains(&name);
            return (!known).then(|| {
                format!("no `fn {name}` in src/, examples/ or tests/, and no call of it in src/ or examples/")
            });
        }
        let owner = path[path.len() - 2];
        if self.types.contains(owner) {
            let defined = self.methods.get(owner).is_some_and(|m| m.contains(name));
            return (!defined)
                .then(|| format!("no `fn {name}` in an impl of `{owner}` or in trait `{owner}`"));
        }
        let files = self.module_files(owner);
        if !files.is_empty() {
            let defined = self
                .fns
                .get(name)
                .is_some_and(|at| at.iter().any(|p| files.iter().any(|f| p.starts_with(f))));
            let is_module = !self.module_files(name).is_empty();
            return (!defined && !is_module)
                .then(|| format!("no `fn {name}` in module `{owner}` (src/{owner})"));
        }
        // A type from outside the workspace: the code must call it, as
        // `Type::name(…)` or as a method, `.name(…)`.
        let call = format!("{owner}::{name}(");
        let method = format!(".{name}(");
        (!self
            .calls_in
            .iter()
            .any(|c| c.contains(&call) || c.contains(&method)))
        .then(|| {
            format!(
                "`{owner}` is not defined here and the code never calls `{call}…)` or `{method}…)`"
            )
        })
    }

    fn check_code_name(&self, name: &str) -> Option<String> {
        let known = self.fns.contains_key(name)
            || self.called.contains(name)
            || self.bindings.contains(name)
            || NOT_RUST.contains(&name);
        (!known).then(|| {
            format!(
                "`{name}` is no fn, field, parameter or binding in src/, examples/ or tests/, \
                 and nothing calls it in src/ or examples/"
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
    let code = code_only(
        "fn a() { let s = \"fn b() {\"; /* fn c */ } // fn d\nfn e<'x>(c: char) { '}'; }",
    );
    assert!(code.contains("fn a") && code.contains("fn e"));
    assert!(!code.contains("fn b") && !code.contains("fn c") && !code.contains("fn d"));
    assert_eq!(type_name("<H: Handler> Server<H> "), Some("Server".into()));
    assert_eq!(type_name(" fmt::Display "), Some("Display".into()));
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
