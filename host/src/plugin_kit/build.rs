//! `sluice plugin build [DIR]`: builds a plugin crate for `wasm32-wasip2` with its `plugin`
//! profile and puts `<crate>.wasm` in the crate's folder, wherever cargo's target dir is.
use super::{KitError, io};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

/// Builds the crate in `dir`; returns the path of the copied `.wasm`.
pub fn build_plugin(dir: &Path, profile: &str) -> Result<PathBuf, KitError> {
    ensure_target()?;
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(KitError::Input {
            path: dir.to_path_buf(),
            message: "no Cargo.toml here: run it in a plugin crate (see `sluice plugin new`)"
                .into(),
        });
    }
    let command = format!("cargo build --profile {profile} --target {TARGET}");
    let output = Command::new("cargo")
        .args(["build", "--profile", profile, "--target", TARGET])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| KitError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(KitError::Command {
            command,
            message: format!("{} (compiler output above)", output.status),
        });
    }
    let manifest = manifest.canonicalize().map_err(io(&manifest))?;
    let built =
        wasm_artifact(&String::from_utf8_lossy(&output.stdout), &manifest).ok_or_else(|| {
            KitError::Command {
            command: command.clone(),
            message:
                "it built no .wasm: is the crate a cdylib (`crate-type = [\"cdylib\", \"rlib\"]`)?"
                    .into(),
        }
        })?;
    let name = built.file_name().expect("an artifact has a name");
    let destination = dir.join(name);
    // Copied under a temporary name and renamed: a pipeline that watches the file never sees
    // half of it.
    let partial = dir.join(format!(".{}.partial", name.to_string_lossy()));
    std::fs::copy(&built, &partial).map_err(io(&partial))?;
    std::fs::rename(&partial, &destination).map_err(io(&destination))?;
    Ok(destination)
}

/// Adds the rustup target when it is missing (quick and quiet when it is there).
fn ensure_target() -> Result<(), KitError> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status();
            match status {
                Ok(status) if status.success() => Ok(()),
                other => Err(KitError::Command {
                    command: format!("rustup target add {TARGET}"),
                    message: format!("{other:?}"),
                }),
            }
        }
        // No rustup (a distribution's Rust): cargo says so if the target is missing.
        Err(_) => Ok(()),
    }
}

/// The `.wasm` of the package at `manifest` in cargo's JSON messages.
fn wasm_artifact(messages: &str, manifest: &Path) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| Path::new(p) == manifest)
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
        })
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wasm_of_this_package_is_found_among_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","manifest_path":"/dep/Cargo.toml","filenames":["/t/libdep.rlib"]}
not json
{"reason":"compiler-artifact","manifest_path":"/p/Cargo.toml","filenames":["/t/wasm32-wasip2/plugin/libp.rlib","/t/wasm32-wasip2/plugin/p.wasm"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            wasm_artifact(messages, Path::new("/p/Cargo.toml")),
            Some(PathBuf::from("/t/wasm32-wasip2/plugin/p.wasm"))
        );
        assert_eq!(wasm_artifact(messages, Path::new("/q/Cargo.toml")), None);
    }
}
