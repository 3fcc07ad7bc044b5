//! The crate layering of ARCHITECTURE.md, checked on the manifests: dependencies
//! point down only (front ends → core → cluster → storage).

use std::path::Path;

fn sluice_deps(krate: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| {
            d.keys()
                .filter(|k| k.starts_with("sluice"))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn dependencies_point_down_only() {
    let allowed: &[(&str, &[&str])] = &[
        ("sluice-storage", &[]),
        ("sluice-cluster", &["sluice-storage"]),
        ("sluice-core", &["sluice-cluster", "sluice-storage"]),
        ("sluice-kafka", &["sluice-core"]),
        ("sluice-admin", &["sluice-core"]),
    ];
    for (krate, ok) in allowed {
        for dep in sluice_deps(krate) {
            assert!(
                ok.contains(&dep.as_str()),
                "{krate} must not depend on {dep} (see ARCHITECTURE.md)"
            );
        }
    }
}
