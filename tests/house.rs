//! The house rules, checked on the source itself: no function of 100 lines or more, no two
//! files that import each other (directly or around a circle), and no module that imports one
//! above it in the layering `src/lib.rs` describes. A change that breaks one fails here with
//! the place named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a function may be, in lines from its `fn` to its closing brace.
const MAX_FUNCTION_LINES: usize = 100;

/// The crate's top-level modules by level, lowest first (`src/lib.rs` says what each is for).
/// A module imports from its own level or below.
const LAYERS: &[&[&str]] = &[
    &["console", "diag", "error", "paths"],
    &["protocol"],
    &["rules"],
    &["config"],
    &["client"],
    &["transfer", "monitor"],
    &["manage", "admin"],
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text with comments, strings and character literals blanked (newlines kept), so that
/// braces and `crate::` can be counted in what is left.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            find(rest, b"*/", 2).map_or(rest.len(), |k| k + 2)
        } else if let Some(hashes) = raw_string_start(b, i) {
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            find(rest, &close, hashes + 2).map_or(rest.len(), |k| k + close.len())
        } else if rest[0] == b'"' {
            let mut k = 1;
            while k < rest.len() && rest[k] != b'"' {
                k += if rest[k] == b'\\' { 2 } else { 1 };
            }
            (k + 1).min(rest.len())
        } else if rest[0] == b'\'' {
            char_literal_len(rest).unwrap_or(1)
        } else {
            out.push(rest[0]);
            i += 1;
            continue;
        };
        if rest[0] == b'\'' && end == 1 {
            out.push(b'\'');
        } else {
            blank(&mut out, &rest[..end]);
        }
        i += end;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    (from..=hay.len().saturating_sub(needle.len())).find(|&k| hay[k..].starts_with(needle))
}

/// At `r"` or `r#"` (not inside an identifier): how many `#` the raw string has.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if b[i] != b'r' || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
        return None;
    }
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    (b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// The length of a character literal at the start of `s`, `None` for a lifetime.
fn char_literal_len(s: &[u8]) -> Option<usize> {
    if s.get(1) == Some(&b'\\') {
        let close = s.iter().skip(2).position(|&c| c == b'\'')?;
        return Some(close + 3);
    }
    let c = std::str::from_utf8(&s[1..s.len().min(6)])
        .ok()
        .or_else(|| {
            (2..6)
                .rev()
                .find_map(|n| std::str::from_utf8(&s[1..s.len().min(n)]).ok())
        })?;
    let ch = c.chars().next()?;
    let n = ch.len_utf8();
    (s.get(1 + n) == Some(&b'\'')).then_some(n + 2)
}

/// Functions of `MAX_FUNCTION_LINES` or more in `code`: (first line, name, lines).
fn long_functions(code: &str) -> Vec<(usize, String, usize)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(k) = find(b, b"fn ", at) {
        at = k + 3;
        if k > 0 && (b[k - 1].is_ascii_alphanumeric() || b[k - 1] == b'_') {
            continue;
        }
        let name: String = code[k + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body starts at the first `{` outside the signature's brackets; a `;` first
        // means a declaration without one.
        let mut depth = 0i32;
        let mut open = None;
        for (j, &c) in b.iter().enumerate().skip(k) {
            match c {
                b'(' | b'[' | b'<' => depth += 1,
                b')' | b']' | b'>' if b.get(j.wrapping_sub(1)) != Some(&b'-') => depth -= 1,
                b';' if depth <= 0 => break,
                b'{' if depth <= 0 => {
                    open = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let mut level = 0;
        let mut close = b.len();
        for (j, &c) in b.iter().enumerate().skip(open) {
            match c {
                b'{' => level += 1,
                b'}' => {
                    level -= 1;
                    if level == 0 {
                        close = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let first = code[..k].matches('\n').count() + 1;
        let last = code[..close].matches('\n').count() + 1;
        if last - first + 1 >= MAX_FUNCTION_LINES {
            found.push((first, name, last - first + 1));
        }
    }
    found
}

#[test]
fn no_function_is_100_lines_or_longer() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("tui").join("src"), &mut files);
    let mut long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (line, name, lines) in long_functions(&code_only(&text)) {
            let shown = file
                .strip_prefix(root())
                .unwrap_or(file)
                .display()
                .to_string();
            long.push(format!("{shown}:{line} {name} ({lines} lines)"));
        }
    }
    assert!(
        long.is_empty(),
        "functions of {MAX_FUNCTION_LINES} lines or more:\n{}",
        long.join("\n")
    );
}

/// A module's path in the crate from its file (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Every `crate::...` path a piece of code names, `use` trees expanded.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let b = code.as_bytes();
    let mut at = 0;
    while let Some(k) = find(b, b"crate::", at) {
        at = k + 7;
        if k > 0 && (b[k - 1].is_ascii_alphanumeric() || b[k - 1] == b'_' || b[k - 1] == b'$') {
            continue;
        }
        expand(&code[k + 7..], Vec::new(), &mut paths);
    }
    paths
}

/// Expands the use tree (or plain path) at the start of `s` into paths, each after `prefix`.
/// Returns how many bytes of `s` it read.
fn expand(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            i += 1;
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    return i + 1;
                }
                i += expand(&s[i..], path.clone(), out);
            }
        }
        let word: String = s[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        i += word.len();
        if !word.is_empty() && word != "self" {
            path.push(word);
        }
        if s[i..].starts_with("::") {
            i += 2;
            continue;
        }
        // ` as name` and the like end the path.
        while i < b.len() && !matches!(b[i], b',' | b'}' | b';' | b'(' | b')' | b'\n') {
            if b[i] == b'{' {
                break;
            }
            i += 1;
        }
        out.push(path);
        return i;
    }
}

/// The code of a file without its `#[cfg(test)]` items: tests may reach anywhere.
fn without_tests(code: &str) -> String {
    match code.find("#[cfg(test)]\nmod tests") {
        Some(k) => code[..k].to_string(),
        None => code.to_string(),
    }
}

struct Crate {
    /// Module path -> the modules (files) it imports, its own ancestors left out.
    imports: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
        let resolve = |path: &[String]| {
            (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|m| modules.contains(m))
        };
        let mut imports = BTreeMap::new();
        for file in &files {
            let me = module_of(src, file);
            let text = std::fs::read_to_string(file).expect("read a source file");
            let code = without_tests(&code_only(&text));
            let targets: BTreeSet<Vec<String>> = crate_paths(&code)
                .iter()
                .filter_map(|p| resolve(p))
                .filter(|t| *t != me && !me.starts_with(t))
                .collect();
            imports.insert(me, targets);
        }
        Crate { imports }
    }

    /// Groups of two or more modules that reach each other through imports.
    fn circles(&self) -> Vec<Vec<String>> {
        let names: Vec<&Vec<String>> = self.imports.keys().collect();
        let reach = |from: &Vec<String>| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![from.clone()];
            while let Some(m) = todo.pop() {
                for t in self.imports.get(&m).into_iter().flatten() {
                    if seen.insert(t.clone()) {
                        todo.push(t.clone());
                    }
                }
            }
            seen
        };
        let reached: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> =
            names.iter().map(|m| (*m, reach(m))).collect();
        let mut circles: BTreeSet<Vec<String>> = BTreeSet::new();
        for m in &names {
            let mut group: Vec<String> = names
                .iter()
                .filter(|o| reached[*m].contains(**o) && reached[**o].contains(*m))
                .map(|o| o.join("::"))
                .collect();
            if group.len() > 1 {
                group.sort();
                circles.insert(group);
            }
        }
        circles.into_iter().collect()
    }
}

fn check_crate(src: &Path, name: &str) {
    let krate = Crate::read(src);
    let circles = krate.circles();
    assert!(
        circles.is_empty(),
        "{name}: files that import each other, around a circle:\n{}",
        circles
            .iter()
            .map(|c| c.join(" <-> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn no_two_files_import_each_other() {
    check_crate(&root().join("src"), "skypipe");
    check_crate(&root().join("tui").join("src"), "skypipe-tui");
}

#[test]
fn no_module_imports_one_above_it() {
    let level = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let krate = Crate::read(&root().join("src"));
    let mut upward = Vec::new();
    for (me, targets) in &krate.imports {
        let Some(top) = me.first() else { continue };
        let Some(mine) = level(top) else {
            // lib.rs and main.rs sit above everything; a module missing from the table is
            // a table to update.
            assert!(
                matches!(top.as_str(), "main"),
                "module {top} is in no layer: add it to LAYERS and src/lib.rs's map"
            );
            continue;
        };
        for t in targets {
            let theirs = level(&t[0]).unwrap_or(usize::MAX);
            if theirs > mine {
                upward.push(format!("{} imports {}", me.join("::"), t.join("::")));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    let long: String = format!(
        "fn short() {{ let s = \"}}\"; }}\nfn long() {{\n{}}}\n",
        "    x();\n".repeat(99)
    );
    let found = long_functions(&code_only(&long));
    assert_eq!(found, [(2, "long".to_string(), 101)]);
    let paths = crate_paths(&code_only(
        "use crate::a::{b::{C, d}, self as e};\nfn f() { crate::x::y(); }",
    ));
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(shown, ["a::b::C", "a::b::d", "a", "x::y"]);
}
