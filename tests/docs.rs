//! The operator docs only name commands that exist, and document every setting there is.

use std::process::Command;

/// Every `tollgate …` command line in the fenced shell blocks and inline code of a document.
fn documented_commands(markdown: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for line in markdown.lines() {
        for fragment in line.split('`') {
            let fragment = fragment.trim();
            let Some(rest) = fragment.strip_prefix("tollgate ") else {
                continue;
            };
            let words: Vec<String> = rest
                .split_whitespace()
                .take_while(|w| {
                    !w.starts_with('-') && !w.starts_with('>') && !w.starts_with('<') && *w != "—"
                })
                .map(str::to_owned)
                .collect();
            if !words.is_empty() {
                commands.push(words);
            }
        }
    }
    commands.sort();
    commands.dedup();
    commands
}

#[test]
fn every_command_in_the_security_guide_exists() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    let commands = documented_commands(&guide);
    assert!(commands.len() >= 10, "{commands:?}");
    for words in commands {
        // Positional values (token names) are not subcommands: keep the subcommand path only.
        let path: Vec<&String> = words
            .iter()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env_clear()
            .args(path.iter().map(|s| s.as_str()))
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "`tollgate {}` is documented but is not a command",
            words.join(" ")
        );
    }
}

/// The environment variables the configuration reads: the quoted SCREAMING_CASE names in
/// `src/config/`.
fn configuration_variables() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/config");
    let source: String = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    let mut names: Vec<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 3
                && s.contains(|c: char| c.is_ascii_uppercase())
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_setting_is_documented_in_env_example_and_the_readme() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/.env.example")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let names = configuration_variables();
    assert!(names.len() >= 30, "{names:?}");
    for name in names {
        assert!(
            example
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{name}="))),
            "{name} is not in .env.example"
        );
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in the README"
        );
    }
}

/// The browser suite says loudly when it cannot run, and `REQUIRE_BROWSER=1` makes that a
/// failure instead of a skip.
#[test]
fn the_browser_suite_refuses_to_pass_silently_without_a_browser() {
    let run = |require: &str| {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/e2e"))
            .env("CHROMIUM", "/nonexistent/chromium")
            .env("E2E_NO_INSTALL", "1")
            .env("REQUIRE_BROWSER", require)
            .output()
            .unwrap()
    };
    let required = run("1");
    let stderr = String::from_utf8_lossy(&required.stderr);
    assert_eq!(required.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BROWSER SUITE NOT RUN"), "{stderr}");
    assert!(stderr.contains("/nonexistent/chromium"), "{stderr}");
    let optional = run("0");
    let stderr = String::from_utf8_lossy(&optional.stderr);
    assert_eq!(optional.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("BROWSER SUITE NOT RUN"), "{stderr}");
    assert!(stderr.contains("REQUIRE_BROWSER=1"), "{stderr}");
}

/// Every source file docs/architecture.md names (`web/routes/billing.rs`, `db/models`, …)
/// exists, under `src/` or from the repository root: the diagram follows the tree.
#[test]
fn the_architecture_guide_names_only_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_-/.".contains(c);
    let mut named = Vec::new();
    for word in guide.split(|c: char| !is_path_char(c)) {
        let word = word.trim_end_matches('.');
        if word.ends_with(".rs") || word.starts_with("crates/") {
            named.push(word.to_owned());
        }
    }
    assert!(named.len() >= 10, "{named:?}");
    for path in named {
        assert!(
            root.join("src").join(&path).exists() || root.join(&path).exists(),
            "docs/architecture.md names {path}, which is not in the tree"
        );
    }
}
