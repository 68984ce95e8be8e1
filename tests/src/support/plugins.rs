//! The WebAssembly plugins from `plugins/`, built once per test process with
//! `cargo build --release --target wasm32-wasip2` (cargo's own lock keeps
//! concurrent test binaries from building twice at once).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the built plugin components.
#[derive(Debug)]
pub struct PluginFiles {
    pub query_affinity: PathBuf,
    pub canary: PathBuf,
    pub maintenance_window: PathBuf,
    /// Misbehaves as its config says: `loop`, `panic`, `oom`,
    /// `unknown-node`, `bad-status`, `init-fail`; anything else is calm.
    pub misbehave: PathBuf,
    /// A valid component of another world.
    pub other_world: PathBuf,
}

/// Builds the plugins workspace (once) and returns the component paths.
pub fn built() -> &'static PluginFiles {
    static BUILT: OnceLock<PluginFiles> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = plugins_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo build in plugins/");
        assert!(status.success(), "building plugins/ failed: {status}");
        let release = dir.join("target/wasm32-wasip2/release");
        let file = |name: &str| {
            let path = release.join(format!("{name}.wasm"));
            assert!(path.exists(), "{} was not built", path.display());
            path
        };
        PluginFiles {
            query_affinity: file("query_affinity"),
            canary: file("canary"),
            maintenance_window: file("maintenance_window"),
            misbehave: file("misbehave"),
            other_world: file("other_world"),
        }
    })
}

/// The `plugins/` workspace next to `tests/`.
pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .join("plugins")
}

/// A TOML `[[plugins]]` table.
pub fn plugin_toml(name: &str, path: &Path, config: &str, on_error: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\npath = \"{}\"\nconfig = '{config}'\non_error = \"{on_error}\"\n",
        path.display()
    )
}

/// `[plugin_runtime]` with a deadline generous enough for the unoptimised
/// debug build of the gateway the tests run (the host side of a call is
/// much slower there); hostile loops are still cut off.
pub fn runtime_toml(watch_files: bool) -> String {
    format!("[plugin_runtime]\ndeadline_ms = 100\nwatch_files = {watch_files}\n")
}
