//! `kylin-gateway`: wiring only. Reads files, builds the pieces from the
//! library, runs them until SIGTERM/SIGINT.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kylin_gateway::admin::auth::{self, AdminToken};
use kylin_gateway::admin::{self, Admin};
use kylin_gateway::config::{self, Config, Discovery, RuntimeKind, RuntimeSettings};
use kylin_gateway::discovery;
use kylin_gateway::discovery::leader_check::LeaderCheckStatus;
use kylin_gateway::fleet;
use kylin_gateway::plugin::{self, PluginChain, PluginControl, RoutingPolicy};
use kylin_gateway::proxy::{Proxy, server};
use kylin_gateway::tls::{self, Termination, UpstreamTls, Verification};
use kylin_gateway::upstream;
use kylin_gateway::view::ViewPublisher;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// mimalloc, not glibc's malloc: fewer instructions and less CPU per
/// proxied request, with idle connections within issue 9's 8 KB
/// (`bench/RESULTS.md`, stop 23). The library leaves the choice to its user.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kylin-gateway",
    version,
    about = "The front door of an Apache Kylin / KAP cluster"
)]
struct Cli {
    /// The gateway's TOML config.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An operator's kylin.properties to take ZooKeeper settings from
    /// (before or after the subcommand).
    #[arg(long, value_name = "FILE", global = true)]
    kylin_properties: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validates a config file and prints the effective config.
    CheckConfig { file: PathBuf },
    /// Works with routing plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Loads a component, validates its world, runs init and routes a sample
    /// query against a sample view, printing the decision.
    Check {
        file: PathBuf,
        /// The plugin's config string (as `config` in `[[plugins]]`).
        #[arg(long, default_value = "")]
        config: String,
        /// Per-call deadline (as `plugin_runtime.deadline_ms`).
        #[arg(long, default_value_t = 2)]
        deadline_ms: u64,
    },
    /// Checks a component (as `check`), stores it in ZooKeeper and points
    /// NAME at it: every gateway with a `source = "zookeeper"` plugin of
    /// that name installs it.
    Publish {
        file: PathBuf,
        /// The plugin's name (`name` of the gateways' `[[plugins]]`).
        #[arg(long)]
        name: String,
        /// The config string the gateways give the plugin's `init`.
        #[arg(long, default_value = "")]
        config: String,
        /// Versions of NAME kept for rollback (the new one included).
        #[arg(long, default_value_t = fleet::store::DEFAULT_KEEP)]
        keep: usize,
        /// Per-call deadline for the check.
        #[arg(long, default_value_t = 2)]
        deadline_ms: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Points NAME back at its previous version.
    Rollback {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists published plugins, their versions and which gateway runs which.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the published plugins are kept.
#[derive(clap::Args)]
struct StoreArgs {
    /// ZooKeeper connect string (`host:port,...[/chroot]`).
    #[arg(long, value_name = "CONNECT")]
    zk: String,
    /// The fleet's base path (the gateways' `fleet.base_path`, else their
    /// discovery base path).
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_BASE_PATH)]
    base: String,
    /// ZooKeeper digest credentials, `digest:user:password`.
    #[arg(long, value_name = "AUTH")]
    auth: Option<String>,
}

impl StoreArgs {
    fn target(&self) -> fleet::commands::Target<'_> {
        fleet::commands::Target {
            connect: &self.zk,
            base: &self.base,
            auth: self.auth.as_deref(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            match load_config(&file, cli.kylin_properties.as_deref())
                .and_then(|config| load_admin_token(&config).map(|_| config))
                .and_then(|config| load_tls(&config).map(|_| config))
            {
                Ok(config) => {
                    println!(
                        "{}",
                        toml::to_string_pretty(&config).unwrap_or_else(|e| e.to_string())
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => config_failure(&error),
            }
        }
        Some(Command::Plugin(PluginCommand::Check {
            file,
            config,
            deadline_ms,
        })) => plugin_check(&file, &config, Duration::from_millis(deadline_ms)),
        Some(Command::Plugin(PluginCommand::Publish {
            file,
            name,
            config,
            keep,
            deadline_ms,
            store,
        })) => plugin_publish(
            &file,
            &name,
            &config,
            keep,
            Duration::from_millis(deadline_ms),
            &store,
        ),
        Some(Command::Plugin(PluginCommand::Rollback { name, store })) => {
            run_store_command(fleet::commands::rollback(&store.target(), &name))
        }
        Some(Command::Plugin(PluginCommand::List { store })) => {
            run_store_command(fleet::commands::list(&store.target()))
        }
        None => serve(cli.config, cli.kylin_properties.as_deref()),
    }
}

/// Runs the gateway with its config file until SIGTERM/SIGINT: config,
/// admin token and TLS files read first (a bad one is one line naming the
/// key), then logging, then the runtime.
fn serve(config_file: Option<PathBuf>, kylin_properties: Option<&Path>) -> ExitCode {
    let Some(file) = config_file else {
        eprintln!("kylin-gateway: --config FILE is required (see --help)");
        return ExitCode::from(2);
    };
    let config = match load_config(&file, kylin_properties) {
        Ok(config) => config,
        Err(error) => return config_failure(&error),
    };
    let admin_token = match load_admin_token(&config) {
        Ok(token) => token,
        Err(error) => return config_failure(&error),
    };
    let tls = match load_tls(&config) {
        Ok(tls) => tls,
        Err(error) => return config_failure(&error),
    };
    let _log_writer = init_tracing();
    // After the filter is installed (it decides whether the access log is
    // on); dropped before `_log_writer`, flushing its lines.
    let _access_log = kylin_gateway::access_log::install_if_enabled();
    let runtime = match build_runtime(config.runtime) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kylin-gateway: runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, admin_token, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("kylin-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A component file's bytes, or exit 2 with the reason.
fn read_component(file: &Path) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(file).map_err(|error| {
        eprintln!("kylin-gateway: cannot read {}: {error}", file.display());
        ExitCode::from(2)
    })
}

fn plugin_check(file: &Path, config: &str, deadline: Duration) -> ExitCode {
    let bytes = match read_component(file) {
        Ok(bytes) => bytes,
        Err(code) => return code,
    };
    match plugin::check(&bytes, config, deadline) {
        Ok(report) => {
            print!("plugin:   {}\n{report}", file.display());
            if report.decision.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("kylin-gateway: {}: {error}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// `plugin publish`: the same checks as `plugin check`, then the store. A
/// component that fails them is not stored (exit 1).
fn plugin_publish(
    file: &Path,
    name: &str,
    config: &str,
    keep: usize,
    deadline: Duration,
    store: &StoreArgs,
) -> ExitCode {
    if name.is_empty() || name.contains('/') {
        eprintln!("kylin-gateway: --name must be non-empty and without '/'");
        return ExitCode::from(2);
    }
    if keep == 0 {
        eprintln!("kylin-gateway: --keep must be at least 1");
        return ExitCode::from(2);
    }
    let bytes = match read_component(file) {
        Ok(bytes) => bytes,
        Err(code) => return code,
    };
    match plugin::check(&bytes, config, deadline) {
        Ok(report) if report.decision.is_ok() => print!("plugin:   {}\n{report}", file.display()),
        Ok(report) => {
            print!("plugin:   {}\n{report}", file.display());
            eprintln!("kylin-gateway: {}: refused, not published", file.display());
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("kylin-gateway: {}: {error}; not published", file.display());
            return ExitCode::FAILURE;
        }
    }
    run_store_command(fleet::commands::publish(
        &store.target(),
        name,
        &bytes,
        config,
        keep,
    ))
}

/// Runs one plugin-store command on a small runtime and prints its answer.
fn run_store_command(
    command: impl std::future::Future<Output = Result<String, String>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kylin-gateway: runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kylin-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

fn config_failure(error: &anyhow::Error) -> ExitCode {
    eprintln!("kylin-gateway: config: {error:#}");
    ExitCode::from(2)
}

/// Reads and validates the config, applying `kylin.properties` if named on
/// the command line or in the config.
fn load_config(file: &Path, kylin_properties: Option<&Path>) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    // A --kylin-properties path is relative to the working directory.
    let kylin_properties = kylin_properties
        .map(std::path::absolute)
        .transpose()
        .context("--kylin-properties")?;
    let mut config = config::parse_with_kylin_properties(&text, kylin_properties.as_deref())?;
    // Relative paths in the file are relative to the file, not to the
    // working directory.
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot resolve the directory of {}", file.display()))?;
    config.resolve_paths(&dir);
    if let Discovery::Zookeeper(settings) = &mut config.discovery {
        if let Some(path) = settings.kylin_properties.clone() {
            let props = std::fs::read_to_string(&path).with_context(|| {
                format!("discovery.kylin_properties: cannot read {}", path.display())
            })?;
            config::kylin_properties::apply(settings, &config::kylin_properties::parse(&props))
                .map_err(|problem| anyhow::anyhow!("discovery.kylin_properties: {problem}"))?;
        }
        if settings.hosts.is_empty() {
            anyhow::bail!("discovery.connect: no ZooKeeper connect string");
        }
    }
    Ok(config)
}

/// The admin API's token, from `admin.token_file` or the environment;
/// required when the admin listener is not on loopback.
fn load_admin_token(config: &Config) -> anyhow::Result<Option<AdminToken>> {
    let file_text = match &config.admin.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("admin.token_file: cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let env = std::env::var(auth::TOKEN_ENV).ok();
    Ok(auth::resolve(config, file_text.as_deref(), env.as_deref())?)
}

/// The async runtime `[runtime]` asks for.
fn build_runtime(settings: RuntimeSettings) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match settings.kind {
        RuntimeKind::MultiThread => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if settings.threads > 0 {
                builder.worker_threads(settings.threads);
            }
            builder
        }
        RuntimeKind::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    builder.enable_all().build()
}

/// With a current-thread runtime, the proxy listeners are served by this
/// many threads of their own (`runtime.threads`, 0: one per core the
/// process may run on); `None`: served on the multi-thread runtime.
fn per_core_threads(settings: RuntimeSettings) -> Option<usize> {
    (settings.kind == RuntimeKind::CurrentThread).then(|| match settings.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    })
}

/// TLS both ways, read before the runtime starts (files, the system's trust
/// store): termination when `listen.https` is set, and TLS to nodes.
struct TlsSetup {
    termination: Option<Termination>,
    upstream: UpstreamTls,
}

fn load_tls(config: &Config) -> anyhow::Result<TlsSetup> {
    let termination = match (&config.listen.https, &config.tls) {
        (Some(_), Some(settings)) => Some(tls::termination(settings).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let upstream = UpstreamTls::from_config(&config.upstream).map_err(anyhow::Error::msg)?;
    Ok(TlsSetup {
        termination,
        upstream,
    })
}

/// Logs (the per-request access log included) go to stdout through a
/// background writer thread, so a request never waits on the stdout lock or
/// a `write` syscall. Keep the guard alive: dropping it flushes what is queued.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        // Colour codes only for a terminal: a log file or collector gets
        // plain lines, and each line costs less to format.
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(writer)
        .init();
    guard
}

async fn run(config: Config, admin_token: Option<AdminToken>, tls: TlsSetup) -> anyhow::Result<()> {
    let metrics = admin::install_recorder();
    let (stop_tx, stop_rx) = watch::channel(false);
    let core = start_core(&config, &tls, &stop_rx).await?;
    let admin_listener = TcpListener::bind(config.listen.admin)
        .await
        .with_context(|| format!("listen.admin: cannot bind {}", config.listen.admin))?;
    let leader_check = LeaderCheckStatus::default();
    let cert_store = tls.termination.as_ref().map(|t| t.store.clone());
    let admin = Admin {
        views: core.views.clone(),
        leader_check: leader_check.clone(),
        metrics,
        draining: stop_rx.clone(),
        plugins: core
            .plugins
            .clone()
            .map(|chain| Arc::new(chain) as Arc<dyn PluginControl>),
        token: admin_token,
        public_metrics: config.admin.public_metrics,
        tls: cert_store.clone(),
        upstream_tls: tls.upstream.verification(),
        fleet: core.fleet.clone(),
        quotas: core.proxy.quotas().clone(),
    };
    let _cert_file_watch = watch_certificates(&config, cert_store)?;
    let _plugin_file_watch = watch_plugins(&config, core.plugins.as_ref())?;
    let _events_task = tokio::spawn(kylin_gateway::events::watch_views(core.views.clone()));
    let discovery_task = tokio::spawn(discovery::run(
        config.discovery.clone(),
        core.views.clone(),
        leader_check,
        tls.upstream.clone(),
    ));

    let listeners =
        serve_proxy_listeners(&config, core.per_core, &core.proxy, &tls, &stop_rx).await?;
    // The admin listener starts last, so /readyz answers only once every
    // proxy listener is bound, and outlives them: it reports `draining`
    // until every open request has finished.
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(admin.serve(admin_listener, async move {
        let _ = admin_stop_rx.await;
    }));
    tracing::info!(admin = %config.listen.admin, "kylin-gateway started");

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    Running {
        listeners,
        admin_stop: admin_stop_tx,
        admin: admin_task,
        discovery: discovery_task,
        idle_reaper: core.idle_reaper,
        fleet: core.fleet_task,
    }
    .stop()
    .await;
    tracing::info!("stopped");
    Ok(())
}

/// The data plane `run` serves and the admin API reports on: the view
/// publisher, the plugin chain, the fleet and the proxy over them.
struct Core {
    views: ViewPublisher,
    plugins: Option<PluginChain>,
    fleet: Option<Arc<fleet::Fleet>>,
    fleet_task: Option<tokio::task::JoinHandle<()>>,
    proxy: Arc<Proxy>,
    idle_reaper: tokio::task::JoinHandle<()>,
    /// Serving threads of their own, with a current-thread runtime.
    per_core: Option<usize>,
}

/// Loads the plugins, joins the fleet and builds the proxy, with the tasks
/// that keep its connection pools and shared limits up to date.
async fn start_core(
    config: &Config,
    tls: &TlsSetup,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Core> {
    // Before the first view: each serving thread gets its own idle list
    // in every node's connection pool.
    let per_core = per_core_threads(config.runtime);
    if let Some(threads) = per_core {
        upstream::set_shards(threads);
    }
    let views = ViewPublisher::with_upstream_tls(config.upstream.tls);
    if tls.upstream.verification() == Verification::Insecure {
        tracing::warn!(
            "upstream.tls_insecure = true: certificates of TLS nodes are NOT verified; anyone on the path to a node can read and change its traffic"
        );
    }
    let plugins = load_plugins(config).await?;
    let (fleet, fleet_task) = start_fleet(config, plugins.clone(), stop.clone()).await;
    let policy = plugins
        .clone()
        .map(|chain| Arc::new(chain) as Arc<dyn RoutingPolicy>);
    let proxy = Arc::new(Proxy::new(
        config,
        views.clone(),
        policy,
        tls.upstream.clone(),
    ));
    let idle_reaper = tokio::spawn(proxy.upstreams().clone().reap_idle(views.clone()));
    if let Some(fleet) = &fleet {
        tokio::spawn(fleet::share_limits(
            fleet.gateways(),
            proxy.quotas().clone(),
        ));
    }
    Ok(Core {
        views,
        plugins,
        fleet,
        fleet_task,
        proxy,
        idle_reaper,
        per_core,
    })
}

/// What `run` started and stops, in order, once the stop signal is sent.
struct Running {
    listeners: tokio::task::JoinSet<()>,
    admin_stop: tokio::sync::oneshot::Sender<()>,
    admin: tokio::task::JoinHandle<()>,
    discovery: tokio::task::JoinHandle<()>,
    idle_reaper: tokio::task::JoinHandle<()>,
    fleet: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The listeners drain first; the admin API (reporting `draining` until
    /// then) after them.
    async fn stop(mut self) {
        while self.listeners.join_next().await.is_some() {}
        let _ = self.admin_stop.send(());
        let _ = self.admin.await;
        // Discovery goes before the runtime does, in one piece: dropped with
        // the runtime, zookeeper-client's session task can go first and its
        // pending watches then panic on a cancelled channel.
        self.discovery.abort();
        self.idle_reaper.abort();
        let _ = self.discovery.await;
        if let Some(task) = self.fleet {
            let _ = task.await;
        }
    }
}

/// Binds `listen.http` and `listen.https` (on the serving threads of their
/// own with a current-thread runtime, else on this runtime) and serves
/// them until `stop` turns true; the set ends when all have drained.
async fn serve_proxy_listeners(
    config: &Config,
    per_core: Option<usize>,
    proxy: &Arc<Proxy>,
    tls: &TlsSetup,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinSet<()>> {
    let mut listeners = Vec::new();
    if let Some(address) = config.listen.http {
        listeners.push(("listen.http", address, None));
    }
    if let (Some(address), Some(termination)) = (config.listen.https, &tls.termination) {
        listeners.push(("listen.https", address, Some(termination.store.clone())));
    }
    let mut served = tokio::task::JoinSet::new();
    for (key, address, acceptor) in listeners {
        let scheme = if acceptor.is_some() { "HTTPS" } else { "HTTP" };
        let limits = config.limits.clone();
        match per_core {
            None => {
                let listener = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("{key}: cannot bind {address}"))?;
                let mut stop = stop.clone();
                let stopped = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                served.spawn(server::serve(
                    listener,
                    proxy.clone(),
                    acceptor,
                    stopped,
                    config.drain_timeout,
                    limits,
                ));
            }
            Some(threads) => {
                let serving = server::serve_per_core(
                    address,
                    threads,
                    proxy.clone(),
                    acceptor,
                    stop.clone(),
                    config.drain_timeout,
                    limits,
                )
                .await
                .with_context(|| format!("{key}: cannot bind {address}"))?;
                served.spawn(serving);
            }
        }
        tracing::info!(%address, threads = per_core.unwrap_or(0), "serving {scheme}");
    }
    Ok(served)
}

/// Plugin reloads on SIGHUP and (with `plugin_runtime.watch_files`) on
/// file changes. The returned watch must be kept alive.
fn watch_plugins(
    config: &Config,
    plugins: Option<&PluginChain>,
) -> anyhow::Result<Option<plugin::FileWatch>> {
    let Some(chain) = plugins else {
        return Ok(None);
    };
    plugin::reload_on_sighup(chain.clone()).context("SIGHUP handler")?;
    if !config.plugin_runtime.watch_files {
        return Ok(None);
    }
    let watch = plugin::watch_files(chain.clone()).context("watching plugin files")?;
    Ok(Some(watch))
}

/// Certificate reloads on SIGHUP and (with `tls.watch_files`) on file
/// changes. The returned watch must be kept alive.
fn watch_certificates(
    config: &Config,
    store: Option<Arc<tls::CertStore>>,
) -> anyhow::Result<Option<tls::reload::FileWatch>> {
    let (Some(store), Some(settings)) = (store, &config.tls) else {
        return Ok(None);
    };
    tls::reload::reload_on_sighup(store.clone()).context("SIGHUP handler")?;
    if !settings.watch_files {
        return Ok(None);
    }
    let watch = tls::reload::watch_files(store, &settings.pairs(), settings.client_ca.as_deref())
        .context("watching certificate files")?;
    Ok(Some(watch))
}

/// Joins the fleet when it is on (registers, follows the other gateways and
/// the published plugins), and waits (up to the ZooKeeper connect timeout)
/// for the published plugins' first versions, so the gateway starts with
/// them in place. The task removes the record when `stop` turns true.
async fn start_fleet(
    config: &Config,
    plugins: Option<PluginChain>,
    stop: watch::Receiver<bool>,
) -> (
    Option<Arc<fleet::Fleet>>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let Some(zookeeper) = config.fleet_zookeeper() else {
        return (None, None);
    };
    let id = config
        .fleet
        .id
        .clone()
        .unwrap_or_else(fleet::record::random_id);
    let fleet = fleet::Fleet::new(id);
    let address = config.fleet.advertise.clone().unwrap_or_else(host_name);
    let listening = fleet::record::Listening {
        http: config.listen.http,
        https: config.listen.https,
        admin: config.listen.admin,
    };
    let started_at_ms = fleet::store::now_ms();
    let wait = zookeeper.connect_timeout;
    let zookeeper_plugins = plugins
        .as_ref()
        .is_some_and(|chain| !chain.zookeeper_plugins().is_empty());
    let member = fleet::Member {
        fleet: fleet.clone(),
        zookeeper,
        record: fleet::record::GatewayRecord::new(fleet.id(), &address, listening, started_at_ms),
        plugins,
    };
    let task = tokio::spawn(fleet::run(member, stop));
    if zookeeper_plugins && !fleet.wait_plugins_synced(wait).await {
        tracing::warn!(
            "fleet: published plugins not read within {} ms; serving without them until they are",
            wait.as_millis()
        );
    }
    tracing::info!(id = fleet.id(), "fleet: joined");
    (Some(fleet), Some(task))
}

/// This host's name, as the fleet record's address.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Loads the configured plugins off the runtime's workers (compilation is
/// CPU-bound); `None` when none are configured.
async fn load_plugins(config: &Config) -> anyhow::Result<Option<PluginChain>> {
    if config.plugins.is_empty() {
        return Ok(None);
    }
    let specs = config.plugins.clone();
    let settings = config.plugin_runtime.clone();
    let chain = tokio::task::spawn_blocking(move || {
        let runtime = plugin::Runtime::new(&settings, specs.len())
            .map_err(|e| anyhow::anyhow!("plugin_runtime: {e:#}"))?;
        anyhow::Ok(PluginChain::load(runtime, specs)?)
    })
    .await??;
    tracing::info!(plugins = config.plugins.len(), "plugins loaded");
    Ok(Some(chain))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
