//! `[http]`: the HTTP listener for viewers (HLS with fMP4 segments and MP4
//! export of every mount's titles, see `crate::http`). Off by default.

use std::net::SocketAddr;

use toml::Spanned;

use super::check::Found;
use super::ByteSize;

/// The largest segment cache accepted: the cache lives in memory.
const MAX_SEGMENT_CACHE: u64 = 16 << 30;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address of the viewers' HTTP listener; "" (the default) runs none.
    pub listen: Spanned<String>,
    /// Memory for HLS segments already built (least recently used go first).
    pub segment_cache: ByteSize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Spanned::new(0..0, String::new()),
            segment_cache: ByteSize(64 << 20),
        }
    }
}

impl HttpConfig {
    /// The listen address, or `None` when the listener is off (an
    /// unparsable address is reported by [`HttpConfig::problems`]).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.get_ref().parse().ok()
    }

    pub(super) fn problems(&self, found: &mut Found) {
        let listen = self.listen.get_ref();
        if !listen.is_empty() && self.listen_addr().is_none() {
            found.add(
                "http.listen",
                format!("`{listen}` is not an address:port (e.g. \"0.0.0.0:8080\"), or \"\" to run no HTTP listener"),
            );
        }
        if self.segment_cache.0 > MAX_SEGMENT_CACHE {
            found.add(
                "http.segment_cache",
                format!(
                    "must be at most {}GiB (it is held in memory)",
                    MAX_SEGMENT_CACHE >> 30
                ),
            );
        }
    }
}
