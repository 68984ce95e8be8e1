//! What more than one bench needs: the plugins of `plugins/`, built.

use std::path::PathBuf;

/// `plugins/target/wasm32-wasip2/release/NAME.wasm`, building `plugins/`
/// first if the file is missing.
pub fn built_plugin(name: &str) -> PathBuf {
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let wasm = plugins.join(format!("target/wasm32-wasip2/release/{name}.wasm"));
    if !wasm.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&plugins)
            .status()
            .expect("run cargo in plugins/");
        assert!(status.success(), "building plugins/ failed");
    }
    wasm
}
