//! docs/architecture.md is the map of the code: every file of the relay
//! and of the core is on it, by name and folder, so the map and `ls`
//! cannot drift apart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs" || e == "html") {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_source_file_is_on_the_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let map = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let mut missing = Vec::new();
    for krate in ["relay/src", "turn/src"] {
        let src = root.join(krate);
        for path in files(&src) {
            let relative = path.strip_prefix(&src).unwrap();
            let name = relative.file_name().unwrap().to_str().unwrap();
            let folder = relative.parent().unwrap().to_str().unwrap();
            // A crate's root is the crate; a folder's mod.rs is the folder.
            let on_map = match name {
                "lib.rs" if folder.is_empty() => true,
                "mod.rs" => map.contains(&format!("{folder}/")),
                _ if folder.is_empty() => map.contains(&format!("`{name}`")),
                _ => {
                    map.contains(&format!("`{folder}/{name}`"))
                        || (map.contains(&format!("{folder}/")) && map.contains(&format!("`{name}`")))
                }
            };
            if !on_map {
                missing.push(format!("{krate}/{}", relative.display()));
            }
        }
    }
    assert!(missing.is_empty(), "not on docs/architecture.md's map: {missing:?}");
}
