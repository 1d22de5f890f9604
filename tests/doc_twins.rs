//! Keeps the two editions of the docs in step: every English page has its
//! Chinese twin, and the two have the same shape. `cargo test` runs it, so
//! `make test` does. It fails with one line per difference, naming both
//! files and what differs.
//!
//! # The twins
//!
//! `README.md` ↔ `docs/zh/README.md`; `docs/X.md` ↔ `docs/zh/X.md`, the
//! tutorial pages included (`docs/tutorial/X.md` ↔ `docs/zh/tutorial/X.md`).
//! A Chinese page with no English twin must be listed in [`ZH_ONLY`].
//!
//! # The same shape
//!
//! Prose is translated, so it cannot be compared. What can be:
//!
//! - **Headings**: the same number, at the same levels, in the same order.
//!   Their words differ, so only the levels are compared.
//! - **Code blocks** (fenced): the same number, in the same order, with the
//!   same info string (`rust`, `console`, ...) and the same text, byte for
//!   byte: code, commands, traces and output are not translated, and the
//!   comments in code blocks stay in English in both editions. Mermaid
//!   diagrams are the one exception: their labels are prose, so only their
//!   skeleton is compared: the same lines, with the quoted labels, the text
//!   after `:` and the name after `as` left out.
//! - **Tables**: the same number, in the same order, each with the same
//!   number of columns and of rows.
//!
//! Tables and headings inside code blocks are not counted.

use std::fs;
use std::path::{Path, PathBuf};

/// Put on the line right before a code block's fence in a Chinese page, it
/// says that the block is translated on purpose (an annotated diagram, or
/// pseudocode whose words are prose): then only its info string and its
/// number of lines are compared with the English block.
const TRANSLATED: &str = "<!-- twin: translated -->";

/// Chinese pages that have no English twin, on purpose.
const ZH_ONLY: &[&str] = &["docs/zh/glossary.md"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug, Default, PartialEq)]
struct Shape {
    /// The level of each heading, in order.
    headings: Vec<usize>,
    /// Each code block: its info string, its text (a skeleton for
    /// mermaid), the line it starts on (not compared), and whether the
    /// line before its fence is [`TRANSLATED`].
    code: Vec<(String, String, usize, bool)>,
    /// Each table: columns, body rows, and the line it starts on (not
    /// compared).
    tables: Vec<(usize, usize, usize)>,
}

/// The skeleton of one line of a Mermaid diagram: what stays when the
/// translated words are taken out. Quoted labels are emptied, the text after
/// `:` (a message, a note, a transition's label) and the name after `as`
/// are cut off, and every word (a state, a node, a keyword) becomes `w`:
/// the arrows, brackets and the number of words stay.
fn mermaid_skeleton(line: &str) -> String {
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in line.chars() {
        if c == '"' {
            quoted = !quoted;
            unquoted.push('"');
        } else if !quoted {
            unquoted.push(c);
        }
    }
    let participant = unquoted.trim_start().starts_with("participant ");
    if let Some(i) = unquoted.find(':') {
        unquoted.truncate(i + 1);
    }
    if participant && let Some(i) = unquoted.find(" as ") {
        unquoted.truncate(i + 4);
    }
    let structural = |c: char| "-<>=.*[]{}()|:\"".contains(c);
    let mut out = String::new();
    let mut in_word = false;
    for c in unquoted.trim().chars() {
        if c.is_whitespace() {
            in_word = false;
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else if structural(c) {
            in_word = false;
            out.push(c);
        } else if !in_word {
            in_word = true;
            out.push('w');
        }
    }
    out
}

/// Table cells of a line like `| a | b |`, or `None` if it is not one.
fn table_cells(line: &str) -> Option<usize> {
    let t = line.trim();
    if !(t.starts_with('|') && t.ends_with('|') && t.len() > 1) {
        return None;
    }
    // `\|` inside a cell is not a column separator.
    let inner = t[1..t.len() - 1].replace("\\|", "");
    Some(inner.split('|').count())
}

fn shape(text: &str) -> Shape {
    let mut s = Shape::default();
    let mut lines = text.lines().enumerate().peekable();
    let mut previous = "";
    while let Some((n, line)) = lines.next() {
        let marked = previous.trim() == TRANSLATED;
        previous = line;
        if let Some(info) = line.strip_prefix("```") {
            let info = info.trim().to_string();
            let mut body = Vec::new();
            for (_, l) in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push(if info == "mermaid" {
                    mermaid_skeleton(l)
                } else {
                    l.to_string()
                });
            }
            s.code.push((info, body.join("\n"), n + 1, marked));
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes > 0 && line[hashes..].starts_with(' ') {
            s.headings.push(hashes);
            continue;
        }
        if let Some(cols) = table_cells(line) {
            let mut rows = 0;
            let mut separator = false;
            while let Some((_, l)) = lines.peek() {
                if table_cells(l).is_none() {
                    break;
                }
                if !separator && l.trim().trim_matches('|').split('|').all(is_rule) {
                    separator = true;
                } else {
                    rows += 1;
                }
                lines.next();
            }
            s.tables.push((cols, rows, n + 1));
        }
    }
    s
}

fn is_rule(cell: &str) -> bool {
    let c = cell.trim();
    !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':'))
}

/// The Chinese twin of an English page, relative to the root.
fn twin(en: &str) -> String {
    if en == "README.md" {
        "docs/zh/README.md".to_string()
    } else {
        format!("docs/zh/{}", en.strip_prefix("docs/").unwrap())
    }
}

/// The `.md` files under `dir` (relative to the root), without descending
/// into `skip`.
fn pages(dir: &str, skip: Option<&str>, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(root().join(dir)) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
        .collect();
    names.sort();
    for name in names {
        let path = root().join(&name);
        if path.is_dir() {
            if Some(name.as_str()) != skip {
                pages(&name, skip, out);
            }
        } else if name.ends_with(".md") {
            out.push(name);
        }
    }
}

fn compare(en: &str, zh: &str, problems: &mut Vec<String>) {
    let read = |p: &str| fs::read_to_string(root().join(p)).unwrap();
    let (a, b) = (shape(&read(en)), shape(&read(zh)));
    if a.headings != b.headings {
        problems.push(format!(
            "{en} / {zh}: headings differ: levels {:?} / {:?}",
            a.headings, b.headings
        ));
    }
    if a.code.len() != b.code.len() {
        problems.push(format!(
            "{en} / {zh}: {} code blocks / {}",
            a.code.len(),
            b.code.len()
        ));
    }
    for ((ia, ta, la, _), (ib, tb, lb, translated)) in a.code.iter().zip(&b.code) {
        let same = if *translated {
            ta.lines().count() == tb.lines().count()
        } else {
            ta == tb
        };
        if ia != ib || !same {
            let what = if ia != ib {
                format!("```{ia} / ```{ib}")
            } else if *translated {
                format!(
                    "translated, but {} lines / {}",
                    ta.lines().count(),
                    tb.lines().count()
                )
            } else {
                let (x, y) = ta
                    .lines()
                    .zip(tb.lines())
                    .find(|(x, y)| x != y)
                    .unwrap_or(("(end)", "(end)"));
                format!("first difference: {x:?} / {y:?}")
            };
            problems.push(format!("{en}:{la} / {zh}:{lb}: code blocks differ: {what}"));
            // With a block missing, the rest are shifted: report one.
            if a.code.len() != b.code.len() {
                break;
            }
        }
    }
    if a.tables.len() != b.tables.len() {
        problems.push(format!(
            "{en} / {zh}: {} tables / {}",
            a.tables.len(),
            b.tables.len()
        ));
    }
    for ((ca, ra, la), (cb, rb, lb)) in a.tables.iter().zip(&b.tables) {
        if (ca, ra) != (cb, rb) {
            problems.push(format!(
                "{en}:{la} / {zh}:{lb}: table of {ca} columns and {ra} rows / {cb} columns and {rb} rows"
            ));
        }
    }
}

#[test]
fn every_english_page_has_a_chinese_twin_of_the_same_shape() {
    let mut english = vec!["README.md".to_string()];
    pages("docs", Some("docs/zh"), &mut english);
    let mut chinese = Vec::new();
    pages("docs/zh", None, &mut chinese);
    assert!(
        english.len() >= 15,
        "found only {} English pages: the scan is broken",
        english.len()
    );

    let mut problems = Vec::new();
    for en in &english {
        let zh = twin(en);
        if !Path::new(&root().join(&zh)).is_file() {
            problems.push(format!("{en}: no Chinese twin {zh}"));
            continue;
        }
        compare(en, &zh, &mut problems);
    }
    for zh in &chinese {
        if !ZH_ONLY.contains(&zh.as_str()) && !english.iter().any(|en| &twin(en) == zh) {
            problems.push(format!(
                "{zh}: no English twin (add it, or list it in ZH_ONLY)"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the English and Chinese editions differ in {} places:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_shape_counts_what_it_should() {
    let page = "# A\n\ntext\n\n## B\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n\
                ```rust\n# not a heading\nfn f() {}\n```\n\n```mermaid\nA->>B: words\n\
                X -- \"label\" --> Y\nparticipant P as name\n```\n";
    let s = shape(page);
    assert_eq!(s.headings, vec![1, 2]);
    assert_eq!(
        s.tables.iter().map(|t| (t.0, t.1)).collect::<Vec<_>>(),
        vec![(2, 2)]
    );
    assert_eq!(s.code.len(), 2);
    assert_eq!(s.code[0].1, "# not a heading\nfn f() {}");
    assert_eq!(s.code[1].1, "w->>w:\nw -- \"\" --> w\nw w w");
    assert_eq!(
        mermaid_skeleton("[*] --> 服务中"),
        mermaid_skeleton("[*] --> Serving")
    );
    assert_eq!(
        mermaid_skeleton("服务中 --> 排空中: SIGTERM（关闭监听）"),
        mermaid_skeleton("Serving --> Draining: SIGTERM (listener closed)")
    );
    let marked = shape("<!-- twin: translated -->\n```text\n读 1\n```\n```text\nread 1\n```\n");
    assert_eq!(
        marked.code.iter().map(|c| c.3).collect::<Vec<_>>(),
        vec![true, false]
    );
}
