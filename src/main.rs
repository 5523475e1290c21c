//! streamcache: a caching RTSP proxy. This is only the command line; the
//! daemon and its parts are the library (`src/lib.rs`), whose design is
//! described in `docs/design/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use streamcache::cli::cache::CacheAction;
use streamcache::config::{self, Config};
use streamcache::{cli, daemon, hash_password, master, sample};

/// Where the Debian package puts the configuration.
const INSTALLED_CONFIG: &str = "/etc/streamcache/streamcache.toml";
/// The commented default, relative to a checkout of the sources.
const CHECKOUT_CONFIG: &str = "etc/streamcache.toml";

#[derive(Parser)]
#[command(version, about = "Caching streaming proxy for RTSP origins")]
struct Cli {
    /// Configuration file [default: /etc/streamcache/streamcache.toml when
    /// installed, else etc/streamcache.toml in a checkout]. Global: it may
    /// follow any subcommand (`streamcache cache ls --config FILE`).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the caching RTSP proxy.
    Serve {
        /// Once every listener is bound, write their addresses to this file
        /// as JSON, e.g. `{"rtsp":"127.0.0.1:8554","admin":null}`: how a
        /// script learns the ports of `listen = "127.0.0.1:0"`.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Run the cluster's master (the configuration needs a `[master]`
    /// section): players' DESCRIBEs are redirected to the best node.
    Master {
        /// As for `serve`, with the control address added:
        /// `{"rtsp":…,"control":…,"admin":…}`.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Run the role the configuration names: the master when it has a
    /// `[master]` section, else the proxy (a cluster node when it has
    /// `[cluster]`). The packaged service runs this.
    Run {
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Validate a configuration file; prints every problem with its line.
    CheckConfig {
        /// Configuration file, as `--config` (which it may also be given as).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
    },
    /// Print the `[[mount.user]]` lines for a player, reading the password
    /// from standard input (one line). The secrets are H(user:realm:password):
    /// they stay valid only for that realm.
    HashPassword {
        /// The mount's `realm` (the default unless the mount sets one).
        #[arg(long, default_value = config::DEFAULT_REALM)]
        realm: String,
        /// The player's user name.
        user: String,
    },
    /// Run the built-in sample origin alone: an RTSP origin serving an
    /// embedded 10 s clip (H.264 + AAC) on demand at /vod and as a live loop
    /// at /live (RTP interleaved on TCP).
    SampleOrigin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8654")]
        listen: std::net::SocketAddr,
    },
    /// Inspect and maintain the cache a configuration points at (safe while
    /// the daemon runs).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.unwrap_or_else(default_config);
    let result = match cli.command {
        Command::Serve { ready_file } => daemon::serve(&config, ready_file.as_deref()),
        Command::Master { ready_file } => master::run(&config, ready_file.as_deref()),
        Command::Run { ready_file } => run_role(&config, ready_file.as_deref()),
        Command::CheckConfig { file } => check_config(file.as_deref().unwrap_or(&config)),
        Command::HashPassword { realm, user } => hash_password::run(&realm, &user),
        Command::SampleOrigin { listen } => sample::run_alone(listen),
        Command::Cache { action } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| cli::cache::run(&c, action)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamcache: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The installed file when there is one, else the checkout's when run from
/// a checkout; else the installed path again, so that the error names where
/// the file was expected.
fn default_config() -> PathBuf {
    [INSTALLED_CONFIG, CHECKOUT_CONFIG]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(INSTALLED_CONFIG))
}

/// `streamcache run`: the master for a file with `[master]`, else the proxy.
fn run_role(path: &Path, ready_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    if config.master.is_some() {
        master::run(path, ready_file)
    } else {
        daemon::serve(path, ready_file)
    }
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            let role = match (&config.master, &config.cluster) {
                (Some(_), _) => "cluster master, ".to_owned(),
                (None, Some(cluster)) => format!("cluster node {}, ", cluster.node_id),
                (None, None) => String::new(),
            };
            println!(
                "{}: valid ({role}{} mount{})",
                path.display(),
                config.mounts.len(),
                if config.mounts.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for problem in &e.problems {
                println!("{}: {problem}", path.display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
