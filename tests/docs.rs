//! The documents newcomers read first stay true to the tree: the README starts with the two
//! commands and stays a front door, and the design's module table names every module of the
//! library, a folder as a folder.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_readme_starts_with_the_two_commands_and_stays_short() {
    let readme = read("README.md");
    let first: Vec<&str> = readme.lines().skip(2).filter(|l| l.starts_with("    ./")).take(2).collect();
    assert_eq!(first.len(), 2, "the README's first lines are the two commands");
    assert!(first[0].starts_with("    ./scripts/demo ") && first[1].starts_with("    ./scripts/test "), "{first:?}");
    assert!(readme.lines().count() <= 150, "the README is a front door; the rest belongs in docs/");
    for link in ["docs/using.md", "docs/tails.md", "docs/design.md", "docs/reliability.md", "docs/testing.md"] {
        assert!(readme.contains(&format!("]({link})")), "the README leads to {link}");
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(link).is_file(), "{link} exists");
    }
}

#[test]
fn the_design_s_module_table_matches_the_library_s_folders() {
    let design = read("docs/design.md");
    let lib = read("crates/core/src/lib.rs");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/core/src");
    let modules: Vec<&str> = lib.lines().filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    assert!(modules.len() > 10, "{modules:?}");
    for module in &modules {
        let folder = source.join(module).is_dir();
        let row = format!("| `{module}{}` |", if folder { "/" } else { "" });
        assert!(design.contains(&row), "docs/design.md has no row {row} for the module {module}");
    }
    let rows = design.lines().filter(|l| l.starts_with("| `") && !l.contains("crates/") && !l.starts_with("| `.`"));
    for row in rows {
        let name = row.trim_start_matches("| `").split('`').next().unwrap().trim_end_matches('/');
        assert!(modules.contains(&name), "docs/design.md lists {name}, which the library does not have");
    }
}
