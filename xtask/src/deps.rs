//! The dependency rule of the workspace: every crate takes its dependencies from the root
//! manifest's `[workspace.dependencies]` (`name.workspace = true`, or `{ workspace = true, ... }`
//! to add features), so that each is named once, with one version.

use std::path::Path;

use anyhow::Context as _;

/// Returns the dependency lines of a member manifest that name a version (or path) of their own.
pub fn pinned_lines(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_deps = trimmed.ends_with("dependencies]");
            continue;
        }
        if !in_deps || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, spec)) = trimmed.split_once('=') else {
            continue;
        };
        let from_workspace =
            name.trim().ends_with(".workspace") || spec.replace(' ', "").contains("workspace=true");
        if !from_workspace {
            found.push(trimmed.to_owned());
        }
    }
    found
}

/// Checks every member manifest of the workspace (the fuzz workspace has its own).
pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut bad = Vec::new();
    for group in ["crates", "plugins"] {
        for entry in std::fs::read_dir(root.join(group))? {
            let manifest = entry?.path().join("Cargo.toml");
            if manifest.exists() {
                bad.extend(scan(&manifest)?);
            }
        }
    }
    for single in ["benches/Cargo.toml", "xtask/Cargo.toml"] {
        bad.extend(scan(&root.join(single))?);
    }
    anyhow::ensure!(
        bad.is_empty(),
        "dependencies must come from [workspace.dependencies] in the root Cargo.toml:\n{}",
        bad.join("\n")
    );
    eprintln!("xtask: every dependency comes from [workspace.dependencies]");
    Ok(())
}

fn scan(manifest: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    Ok(pinned_lines(&text)
        .into_iter()
        .map(|l| format!("{}: {l}", manifest.display()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::pinned_lines;

    #[test]
    fn own_versions_are_found_and_workspace_ones_pass() {
        let manifest = r#"
[package]
name = "x"
version.workspace = true

[dependencies]
tokio.workspace = true
reqwest = { workspace = true, features = ["http2"] }
zstd = "0.13"

[dev-dependencies]
proptest = { version = "1.7", default-features = false }

[features]
a = []
"#;
        assert_eq!(
            pinned_lines(manifest),
            vec![
                r#"zstd = "0.13""#.to_owned(),
                r#"proptest = { version = "1.7", default-features = false }"#.to_owned()
            ]
        );
    }
}
