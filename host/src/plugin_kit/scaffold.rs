//! `sluice plugin new NAME [--stateful]`: a plugin crate that builds and passes its tests as
//! generated. The files come from `sdk/template/`, compiled into the binary.
use super::{KitError, io};
use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("../../../sdk/template/Cargo.toml.in");
const README: &str = include_str!("../../../sdk/template/README.md.in");
const GITIGNORE: &str = include_str!("../../../sdk/template/gitignore");
const STATELESS: &str = include_str!("../../../sdk/template/stateless.rs");
const STATELESS_TEST: &str = include_str!("../../../sdk/template/stateless_test.rs");
const STATEFUL: &str = include_str!("../../../sdk/template/stateful.rs");
const STATEFUL_TEST: &str = include_str!("../../../sdk/template/stateful_test.rs");
/// The versions Sluice itself is built and tested with: a new plugin starts from them rather
/// than from whatever crates.io has newest today.
const CARGO_LOCK: &str = include_str!("../../../Cargo.lock");

/// What `new_plugin` made.
#[derive(Debug)]
pub struct Scaffold {
    pub dir: PathBuf,
    /// The crate (and `.wasm`) name: the plugin name with `-` as `_`.
    pub crate_name: String,
    pub files: Vec<PathBuf>,
}

/// Creates `parent/name/` with a plugin crate depending on the SDK at `sdk`.
pub fn new_plugin(
    name: &str,
    parent: &Path,
    stateful: bool,
    sdk: &Path,
) -> Result<Scaffold, KitError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(KitError::BadName { name: name.into() });
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(KitError::Exists { path: dir });
    }
    let sdk = sdk.canonicalize().map_err(io(sdk))?;
    let crate_name = name.replace('-', "_");
    let type_name: String = crate_name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| part[..1].to_ascii_uppercase() + &part[1..])
        .collect();
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{Type}}", &type_name)
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    let (lib, test) = if stateful {
        (STATEFUL, STATEFUL_TEST)
    } else {
        (STATELESS, STATELESS_TEST)
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("Cargo.lock", CARGO_LOCK.to_string()),
        ("README.md", fill(README)),
        (".gitignore", GITIGNORE.to_string()),
        ("src/lib.rs", fill(lib)),
        ("tests/plugin.rs", fill(test)),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(io(folder))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(Scaffold {
        dir,
        crate_name,
        files: written,
    })
}

/// Where the SDK is: `--sdk`, else `$SLUICE_ROOT/sdk`, else the checkout this binary was
/// built from.
pub fn find_sdk(explicit: Option<&Path>) -> Result<PathBuf, KitError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_path_buf()],
        None => std::env::var_os("SLUICE_ROOT")
            .map(|root| PathBuf::from(root).join("sdk"))
            .into_iter()
            .chain([PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../sdk"
            ))])
            .collect(),
    };
    candidates
        .iter()
        .find(|path| path.join("Cargo.toml").is_file())
        .and_then(|path| path.canonicalize().ok())
        .ok_or_else(|| KitError::NoSdk {
            tried: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_crate_and_type_names() {
        let parent = tempfile::tempdir().unwrap();
        let sdk = find_sdk(None).unwrap();
        let made = new_plugin("my-first_filter", parent.path(), false, &sdk).unwrap();
        assert_eq!(made.crate_name, "my_first_filter");
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MyFirstFilter {"), "{lib}");
        let test = std::fs::read_to_string(made.dir.join("tests/plugin.rs")).unwrap();
        assert!(
            test.contains("use my_first_filter::MyFirstFilter;"),
            "{test}"
        );
        let manifest = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-first_filter\""));
        assert!(manifest.contains(&sdk.canonicalize().unwrap().display().to_string()));
    }

    #[test]
    fn bad_names_and_existing_folders_are_refused() {
        let parent = tempfile::tempdir().unwrap();
        let sdk = find_sdk(None).unwrap();
        for name in ["", "9lives", "My-Plugin", "a b", "../escape"] {
            let error = new_plugin(name, parent.path(), false, &sdk).unwrap_err();
            assert!(matches!(error, KitError::BadName { .. }), "{name}: {error}");
        }
        new_plugin("twice", parent.path(), true, &sdk).unwrap();
        let error = new_plugin("twice", parent.path(), true, &sdk).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
    }

    #[test]
    fn no_template_placeholder_is_left() {
        let parent = tempfile::tempdir().unwrap();
        let sdk = find_sdk(None).unwrap();
        for (name, stateful) in [("plain", false), ("keeps-state", true)] {
            let made = new_plugin(name, parent.path(), stateful, &sdk).unwrap();
            for file in &made.files {
                let text = std::fs::read_to_string(file).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} keeps a placeholder",
                    file.display()
                );
            }
        }
    }
}
