//! The sample origin: a small RTSP origin built into the binary, serving an
//! embedded clip ([`clip`]) on demand at `/vod` and as a live loop at
//! `/live` ([`live`]), so that a first run has something to play and to
//! cache without any other program installed.
//!
//! `streamcache sample-origin` runs it alone; `[sample_origin] listen` runs
//! it inside the daemon (the default configuration does, and mounts it at
//! `/demo/vod` and `/demo/live`). It is an origin like any other to the
//! proxy: reached over RTSP on loopback, its titles fetched and cached.

mod clip;
mod conn;
mod live;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use clip::Clip;
use live::Live;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;

/// What every connection shares.
struct Sample {
    clip: Arc<Clip>,
    live: Arc<Live>,
}

/// A bound sample origin, ready to [`SampleOrigin::run`].
pub struct SampleOrigin {
    listener: TcpListener,
    sample: Arc<Sample>,
}

impl SampleOrigin {
    /// Opens the embedded clip and binds `addr`.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<SampleOrigin> {
        let clip = Arc::new(Clip::open()?);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("sample origin: cannot listen on {addr}"))?;
        Ok(SampleOrigin {
            listener,
            sample: Arc::new(Sample {
                live: Arc::new(Live::new(Arc::clone(&clip))),
                clip,
            }),
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves connections for ever.
    pub async fn run(self) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        if let Ok(addr) = self.listener.local_addr() {
            info!(%addr, "sample origin serving rtsp://{addr}/vod and rtsp://{addr}/live");
        }
        loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                return;
            };
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    debug!(%peer, "sample origin: connection");
                    let sample = Arc::clone(&self.sample);
                    tokio::spawn(async move {
                        conn::serve(sample, stream).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    warn!(error = %e, "sample origin: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// `streamcache sample-origin`: the sample origin alone, until Ctrl-C or
/// SIGTERM.
pub fn run_alone(addr: SocketAddr) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let origin = SampleOrigin::bind(addr).await?;
        tokio::select! {
            () = origin.run() => {}
            () = crate::daemon::shutdown_signal() => info!("sample origin stopping"),
        }
        Ok(ExitCode::SUCCESS)
    })
}
